package images

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Recipe is an image [Build] knows how to make from a distribution's archive.
type Recipe struct {
	Name    string // what `superjolt image build NAME` takes, and the image's default name
	Suite   string // the Debian suite mmdebstrap installs
	Summary string
}

// Recipes are the images superjolt builds.
var Recipes = []Recipe{
	{Name: "debian-12", Suite: "bookworm", Summary: "Debian 12 (bookworm): systemd, OpenSSH, the cloud kernel"},
}

// RecipeNamed returns the recipe called name.
func RecipeNamed(name string) (Recipe, error) {
	for _, r := range Recipes {
		if r.Name == name {
			return r, nil
		}
	}
	names := make([]string, len(Recipes))
	for i, r := range Recipes {
		names[i] = r.Name
	}
	return Recipe{}, fmt.Errorf("superjolt builds no image called %q: it builds %s (or import one with `superjolt image import`)", name, strings.Join(names, ", "))
}

// debianBase are the packages of every Debian image, beyond mmdebstrap's minbase: systemd as
// init, udev, the image's own kernel (the cloud flavour, built for VMs), OpenSSH, and the tools an
// operator reaches for first.
var debianBase = []string{
	"systemd-sysv", "udev", "linux-image-cloud-amd64", "openssh-server", "iproute2", "iputils-ping",
	"procps", "less", "ca-certificates", "e2fsprogs",
}

// packageName is what a Debian package name may be (Debian policy 5.6.1), with an optional
// =version or /suite.
var packageName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+([=/][A-Za-z0-9.+~:-]+)?$`)

// CheckPackages checks extra package names for a recipe.
func CheckPackages(pkgs []string) error {
	if len(pkgs) > 200 {
		return fmt.Errorf("%d packages is more than the 200 an image build takes", len(pkgs))
	}
	for _, p := range pkgs {
		if !packageName.MatchString(p) {
			return fmt.Errorf("%q is not a Debian package name (lowercase letters, digits, + - and ., at least two characters; optionally =VERSION)", p)
		}
	}
	return nil
}

// DebianOptions say how [BuildDebian] makes an image.
type DebianOptions struct {
	Recipe Recipe
	// Packages are installed beyond the recipe's own (checked with CheckPackages).
	Packages []string
	// Agent is a static superjolt-agent binary. Required.
	Agent string
	// CacheDir keeps the root file system tarballs mmdebstrap makes (default [CacheDir]).
	CacheDir string
	// TempDir: see ImportOptions.
	TempDir string
	// Logf reports progress. Default: silent.
	Logf func(format string, args ...any)
}

func (o DebianOptions) withDefaults() DebianOptions {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.CacheDir == "" {
		o.CacheDir = CacheDir()
	}
	return o
}

// BuildDebian makes a Debian image in dir: mmdebstrap installs the recipe's suite with systemd, the
// cloud kernel, OpenSSH and opts.Packages from the archive apt is configured with into a tarball,
// which is kept in the cache (keyed by suite and packages, so the next build of the same image
// skips mmdebstrap), then imported as [Import] does.
func BuildDebian(ctx context.Context, dir string, opts DebianOptions) (*Image, error) {
	opts = opts.withDefaults()
	if err := CheckPackages(opts.Packages); err != nil {
		return nil, err
	}
	tarball, err := DebianTarball(ctx, opts)
	if err != nil {
		return nil, err
	}
	img, err := Import(ctx, tarball, dir, ImportOptions{Agent: opts.Agent, TempDir: opts.TempDir, Logf: opts.Logf})
	if err != nil {
		return nil, err
	}
	return img, nil
}

// DebianTarball returns the cached mmdebstrap tarball for opts' suite and packages, making it the
// first time.
func DebianTarball(ctx context.Context, opts DebianOptions) (string, error) {
	opts = opts.withDefaults()
	mmdebstrap := lookPath("mmdebstrap")
	if mmdebstrap == "" {
		return "", errors.New("mmdebstrap not found: apt-get install mmdebstrap (scripts/install-deps installs it)")
	}
	pkgs := slices.Concat(debianBase, opts.Packages)
	slices.Sort(pkgs)
	pkgs = slices.Compact(pkgs)
	h := sha256.New()
	fmt.Fprintf(h, "builder=%s\nsuite=%s\npackages=%s\n", builderVersion, opts.Recipe.Suite, strings.Join(pkgs, ","))
	key := hex.EncodeToString(h.Sum(nil))[:16]
	root := filepath.Join(opts.CacheDir, "rootfs")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(ctx, filepath.Join(root, "lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	tarball := filepath.Join(root, opts.Recipe.Name+"-"+key+".tar")
	if _, err := os.Stat(tarball); err == nil {
		opts.Logf("using the cached root file system %s", filepath.Base(tarball))
		now := time.Now()
		os.Chtimes(tarball, now, now)
		return tarball, nil
	}
	opts.Logf("installing %s with mmdebstrap: %s", opts.Recipe.Suite, strings.Join(pkgs, " "))
	tmp := tarball + ".tmp"
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, mmdebstrap, "--variant=minbase", "--format=tar",
		"--include="+strings.Join(pkgs, ","), opts.Recipe.Suite, tmp)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	out, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return "", err
	}
	var tail []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "I: "); ok {
			opts.Logf("mmdebstrap: %s", rest)
		}
		if tail = append(tail, line); len(tail) > 20 {
			tail = tail[1:]
		}
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("mmdebstrap %s: %w:\n%s", opts.Recipe.Suite, err, strings.Join(tail, "\n"))
	}
	if err := os.Rename(tmp, tarball); err != nil {
		return "", err
	}
	pruneTarballs(root, filepath.Base(tarball), opts.Logf)
	return tarball, nil
}

// pruneTarballs keeps the newest few cached tarballs (each is hundreds of MB), as pruneImages keeps
// images.
func pruneTarballs(root, keep string, logf func(string, ...any)) {
	matches, _ := filepath.Glob(filepath.Join(root, "*.tar"))
	matches = slices.DeleteFunc(matches, func(m string) bool { return filepath.Base(m) == keep })
	pruneCache(matches, "root file system", logf)
}
