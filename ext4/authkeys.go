package ext4

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// AuthorizedKeysPath is where AddAuthorizedKeys puts the keys: root's
// authorized_keys, which sshd reads for logins as root.
const AuthorizedKeysPath = "/root/.ssh/authorized_keys"

// AddAuthorizedKeys appends the OpenSSH public keys (one authorized_keys
// line each, already validated by the caller) to /root/.ssh/authorized_keys
// of the ext2/3/4 filesystem in the disk file img, offline: debugfs -w
// edits the image, nothing is mounted. The image must not be in use.
//
// /root and /root/.ssh are made (mode 0700, owner 0:0) when missing and
// left as they are when present; an existing authorized_keys keeps its
// lines, and a key it already holds is not added twice. The file is
// written mode 0600, owner 0:0, and read back to check it.
func AddAuthorizedKeys(ctx context.Context, img string, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	for _, k := range keys {
		if k == "" || strings.ContainsAny(k, "\r\n") {
			return fmt.Errorf("ext4: an authorized_keys line must be one non-empty line, not %q", k)
		}
	}
	ext, err := IsExt(img)
	if err != nil {
		return err
	}
	if !ext {
		return fmt.Errorf("%s holds no ext2/3/4 filesystem, so %s cannot be written into it offline", img, AuthorizedKeysPath)
	}
	var cmds []string
	for _, dir := range []string{"/root", "/root/.ssh"} {
		typ, err := fileType(ctx, img, dir)
		if err != nil {
			return err
		}
		switch typ {
		case "":
			cmds = append(cmds, "mkdir "+dir, "sif "+dir+" mode 040700", "sif "+dir+" uid 0", "sif "+dir+" gid 0")
		case "directory":
		default:
			return fmt.Errorf("%s: %s is a %s, not a directory: cannot write %s", img, dir, typ, AuthorizedKeysPath)
		}
	}
	var old []byte
	typ, err := fileType(ctx, img, AuthorizedKeysPath)
	if err != nil {
		return err
	}
	switch typ {
	case "":
	case "regular":
		if old, err = debugfs(ctx, img, false, "cat "+AuthorizedKeysPath); err != nil {
			return err
		}
		cmds = append(cmds, "rm "+AuthorizedKeysPath)
	default:
		return fmt.Errorf("%s: %s is a %s, not a regular file: remove it from the image first", img, AuthorizedKeysPath, typ)
	}
	want := appendKeys(old, keys)

	tmp, err := os.MkdirTemp("", "superjolt-authkeys-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	local := filepath.Join(tmp, "authorized_keys")
	if strings.ContainsAny(local, " \t\"'\\") {
		return fmt.Errorf("ext4: the temporary file %q has a character debugfs cannot take; set TMPDIR to a plain path", local)
	}
	if err := os.WriteFile(local, want, 0o600); err != nil {
		return err
	}
	cmds = append(cmds,
		"cd /root/.ssh",
		"write "+local+" authorized_keys",
		"sif "+AuthorizedKeysPath+" mode 0100600",
		"sif "+AuthorizedKeysPath+" uid 0",
		"sif "+AuthorizedKeysPath+" gid 0",
	)
	if _, err := debugfs(ctx, img, true, cmds...); err != nil {
		return err
	}
	got, err := debugfs(ctx, img, false, "cat "+AuthorizedKeysPath)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s: %s reads back as %d bytes, not the %d written", img, AuthorizedKeysPath, len(got), len(want))
	}
	return nil
}

// appendKeys returns the authorized_keys content old with keys appended,
// each on a line of its own, leaving out those already in it.
func appendKeys(old []byte, keys []string) []byte {
	have := map[string]bool{}
	for _, l := range strings.Split(string(old), "\n") {
		have[strings.TrimSpace(l)] = true
	}
	out := bytes.Clone(old)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	for _, k := range keys {
		k = strings.TrimSpace(k)
		if have[k] {
			continue
		}
		have[k] = true
		out = append(out, k...)
		out = append(out, '\n')
	}
	return out
}

// fileType returns the type debugfs gives the file at path in img
// ("regular", "directory", "symlink" …), or "" when there is none.
func fileType(ctx context.Context, img, path string) (string, error) {
	out, err := debugfs(ctx, img, false, "stat "+path)
	if isNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	// "Inode: 13   Type: directory    Mode:  0700   Flags: 0x80000"
	for _, f := range strings.Split(string(out), "\n") {
		if _, rest, ok := strings.Cut(f, "Type: "); ok {
			if typ, _, _ := strings.Cut(strings.TrimSpace(rest), " "); typ != "" {
				return typ, nil
			}
		}
	}
	return "", fmt.Errorf("debugfs stat %s in %s: no type in its answer: %s", path, img, clipOut(out))
}

// debugfsError is a complaint debugfs printed about one of its commands.
type debugfsError struct{ msg string }

func (e *debugfsError) Error() string { return e.msg }

func isNotFound(err error) bool {
	de, ok := err.(*debugfsError)
	return ok && strings.Contains(de.msg, "File not found by ext2_lookup")
}

// debugfs runs the commands on img (read-write when write is set) and
// returns what they printed on stdout: one command runs with -R, and its
// output is returned as it is; several are fed on stdin (-f -), and debugfs
// mixes its echo of them into stdout. debugfs exits 0 whatever befalls its
// commands and says so on stderr: any line there but its banner is an
// error.
func debugfs(ctx context.Context, img string, write bool, cmds ...string) ([]byte, error) {
	bin, err := Tool("debugfs")
	if err != nil {
		return nil, err
	}
	args := []string{}
	if write {
		args = append(args, "-w")
	}
	var stdin string
	if len(cmds) == 1 {
		args = append(args, "-R", cmds[0], img)
	} else {
		args = append(args, "-f", "-", img)
		stdin = strings.Join(cmds, "\n") + "\n"
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("debugfs %s: %w: %s", img, err, clipOut(stderr.Bytes()))
	}
	var complaints []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "debugfs ") || strings.HasPrefix(l, "Using EXT2FS Library") {
			continue
		}
		complaints = append(complaints, l)
	}
	if len(complaints) > 0 {
		return nil, &debugfsError{msg: fmt.Sprintf("debugfs on %s (%s): %s", img, strings.Join(cmds, "; "), strings.Join(complaints, "; "))}
	}
	return stdout.Bytes(), nil
}

// clipOut keeps error output short.
func clipOut(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return s
}
