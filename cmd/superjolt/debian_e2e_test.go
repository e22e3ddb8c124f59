package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/appliance/model"
)

// needDebian skips unless a Debian image can be built here.
func needDebian(tb testing.TB) {
	tb.Helper()
	needVMs(tb)
	for _, tool := range []string{"mmdebstrap", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("needs %s (scripts/install-deps installs it)", tool)
		}
	}
}

// debianGuest is a running Debian 12 guest with PostgreSQL, made the way an
// operator would: image build, vm create with an SSH key, on a box whose
// network lives in namespaces the test made.
type debianGuest struct {
	d        *daemon
	vm       model.VM
	key      string // the private key's file
	app, lan string // namespaces
}

// startDebianGuest builds the debian-12 image (with PostgreSQL) and boots a
// small VM from it, waiting until systemd says the system is running.
func startDebianGuest(t testing.TB) *debianGuest {
	t.Helper()
	app, lan := newNetns(t, "sjapp"), newNetns(t, "sjlan")
	link(t, app, lan)
	d := startDaemonIn(t, app, nil, "--clock=manual", "--pool-size", "20G")
	begin := time.Now()
	step := func(what string) { t.Logf("%-60s %6.1fs", what, time.Since(begin).Seconds()) }

	built := d.ok(t, "image", "build", "debian-12", "--packages", "postgresql")
	if !strings.Contains(built, "Debian GNU/Linux 12 (bookworm)") {
		t.Fatalf("image build debian-12 said %q, want the image's OS", built)
	}
	step("image build debian-12 --packages postgresql")
	var deb model.Image
	for _, im := range okJSON[[]model.Image](t, d, "image", "list") {
		if im.Name == "debian-12" {
			deb = im
		}
	}
	if !strings.HasPrefix(deb.Kernel, "6.") || !strings.Contains(deb.Source, "postgresql") || deb.SizeBytes < 100<<20 {
		t.Fatalf("image list: debian-12 is %+v, want its kernel, source and size", deb)
	}
	if r := d.sj(t, "image", "build", "debian-12"); r.code != exitConflict || !strings.Contains(r.stderr, "image rm debian-12") {
		t.Fatalf("a second build under the same name: exit %d %q, want a conflict saying how to free the name", r.code, r.stderr)
	}

	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "id")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tester@lan", "-f", key)
	acct := okJSON[model.Account](t, d, "account", "create", "dana", "--balance", "100")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", acct.ID, "--tier", "small", "--image", "debian-12",
		"--name", "deb-1", "--ssh-key", key+".pub")
	step("vm create --image debian-12 (agent answered)")
	g := &debianGuest{d: d, vm: vm, key: key, app: app, lan: lan}
	g.waitRunning(t)
	step("systemctl is-system-running: running")
	return g
}

// exec runs a command in the guest and returns its output.
func (g *debianGuest) exec(t testing.TB, args ...string) string {
	t.Helper()
	return g.d.ok(t, append([]string{"vm", "exec", g.vm.ID, "--timeout", "5m", "--"}, args...)...)
}

// waitRunning waits until systemd has started everything, and fails on a
// degraded system with the units that failed.
func (g *debianGuest) waitRunning(t testing.TB) {
	t.Helper()
	r := g.d.sj(t, "vm", "exec", g.vm.ID, "--timeout", "5m", "--", "systemctl", "is-system-running", "--wait")
	if state := strings.TrimSpace(r.stdout); state != "running" {
		failed := g.d.sj(t, "vm", "exec", g.vm.ID, "--", "systemctl", "--failed", "--no-pager")
		t.Fatalf("systemctl is-system-running: %q (exit %d), want running; failed units:\n%s", state, r.code, failed.stdout)
	}
}

// TestDebianGuest: `image build debian-12`, `vm create --image debian-12
// --ssh-key`: the guest boots with systemd, its hostname is the VM's name,
// its network is the one the host gave, and OpenSSH's own client, on the
// stand-in LAN, logs in with the key through a port forward. Then the
// consistency proof with PostgreSQL (see postgresProof).
func TestDebianGuest(t *testing.T) {
	needDebian(t)
	g := startDebianGuest(t)
	d := g.d

	if host := strings.TrimSpace(g.exec(t, "hostname")); host != "deb-1" {
		t.Fatalf("the guest's hostname is %q, want the VM's name deb-1", host)
	}
	if addr := g.exec(t, "ip", "-4", "addr", "show", "eth0"); !strings.Contains(addr, "inet "+g.vm.IP.String()+"/") {
		t.Fatalf("eth0 in the guest does not have %s:\n%s", g.vm.IP, addr)
	}
	// The root file system has the tier's disk (small: 10 GiB) from the
	// first boot: the host grew it when it made the VM's disk.
	df := strings.Fields(g.exec(t, "df", "-B1", "--output=size", "/"))
	if size, _ := strconv.ParseInt(df[len(df)-1], 10, 64); size < 9<<30 {
		t.Fatalf("the guest's / is %v bytes, want the small tier's 10 GiB", df)
	}
	if osr := g.exec(t, "cat", "/etc/os-release"); !strings.Contains(osr, `VERSION_ID="12"`) {
		t.Fatalf("/etc/os-release:\n%s", osr)
	}
	show := d.ok(t, "vm", "show", g.vm.ID)
	if !strings.Contains(show, "ssh root@"+g.vm.IP.String()) {
		t.Fatalf("vm show does not say how to connect:\n%s", show)
	}

	// OpenSSH from the LAN, through a forward of the box's port 2222.
	d.ok(t, "vm", "ports", "add", g.vm.ID, "2222:22/tcp")
	sshArgs := []string{"ssh", "-i", g.key, "-p", "2222", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@" + appAddr}
	var out string
	var err error
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		if out, err = try(g.lan, 30*time.Second, append(sshArgs, "hostname; systemctl is-active ssh")...); err == nil {
			break
		}
	}
	if err != nil || out != "deb-1\nactive\n" {
		t.Fatalf("ssh -p 2222 root@%s from the LAN: %v %q", appAddr, err, out)
	}
	// The host keys are the VM's own, made on its first boot.
	if fp := g.exec(t, "ssh-keygen", "-l", "-f", "/etc/ssh/ssh_host_ed25519_key.pub"); !strings.Contains(fp, "ED25519") {
		t.Fatalf("the VM has no host key of its own: %q", fp)
	}
	// Without the key, no login.
	other := filepath.Join(t.TempDir(), "other")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other)
	bad := append([]string{}, sshArgs...)
	bad[2] = other
	if out, err := try(g.lan, 30*time.Second, append(bad, "true")...); err == nil {
		t.Fatalf("ssh with a key the VM was not given logged in: %q", out)
	}
	t.Log("OpenSSH from the LAN logged in with the VM's key, and not with another")

	postgresProof(t, g)

	// The image can go while its VM runs: the VM's disk, kernel and
	// initramfs are its own (a btrfs snapshot), so it boots again after.
	d.ok(t, "image", "rm", "debian-12", "--yes")
	d.ok(t, "vm", "stop", g.vm.ID)
	d.ok(t, "vm", "start", g.vm.ID)
	if host := strings.TrimSpace(g.exec(t, "hostname")); host != "deb-1" {
		t.Fatalf("after image rm and a restart the guest says %q", host)
	}
	if r := d.sj(t, "vm", "create", "--account", g.vm.AccountID, "--tier", "small", "--image", "debian-12"); r.code != exitNotFound {
		t.Fatalf("vm create from a removed image: exit %d %q, want not found", r.code, r.stderr)
	}
}

// pgCycles is how many backup-and-restore cycles the consistency proof runs
// (SUPERJOLT_PG_CYCLES, default 10).
func pgCycles(t testing.TB) int {
	if v := os.Getenv("SUPERJOLT_PG_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SUPERJOLT_PG_CYCLES=%q: want a positive number", v)
		}
		return n
	}
	return 10
}

// psql runs SQL as postgres in the guest and returns psql's unaligned,
// tuples-only output.
func (g *debianGuest) psql(t testing.TB, sql string) string {
	t.Helper()
	return strings.TrimSpace(g.exec(t, "runuser", "-u", "postgres", "--", "psql", "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql))
}

// writerScript commits numbered rows to PostgreSQL as fast as one client
// can, each in its own transaction (psql's autocommit), and writes to
// /run/acks (tmpfs: in no backup) one line per acknowledged row: the number
// and the guest's clock in µs when the server ran the INSERT, which is
// before its commit and after the previous row's acknowledgement. stdbuf
// makes psql write each line as it gets it.
const writerScript = `set -e
start=$(runuser -u postgres -- psql -qAtX -c 'SELECT coalesce(max(n),0)+1 FROM acks')
seq "$start" 1000000000 |
	sed 's/.*/INSERT INTO acks(n) VALUES (&) RETURNING n, (extract(epoch FROM clock_timestamp())*1000000)::bigint;/' |
	runuser -u postgres -- stdbuf -oL psql -qAtX -F ' ' -v ON_ERROR_STOP=1 > /run/acks
`

// ack is one acknowledged row: its number and the guest's clock (µs) when
// its INSERT ran.
type ack struct{ n, at int64 }

func (g *debianGuest) acks(t testing.TB) []ack {
	t.Helper()
	var out []ack
	for _, line := range strings.Split(strings.TrimSpace(g.exec(t, "cat", "/run/acks")), "\n") {
		var a ack
		if _, err := fmt.Sscanf(line, "%d %d", &a.n, &a.at); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// freezeWindow reads, from the agent's log in the guest, the guest's clock
// (µs) when its last freeze began and when the thaw after it was done.
func (g *debianGuest) freezeWindow(t testing.TB) (began, thawed int64) {
	t.Helper()
	log := g.exec(t, "journalctl", "-b", "-u", "superjolt-agent", "-o", "cat", "--no-pager")
	for _, line := range strings.Split(log, "\n") {
		if v, ok := logField(line, "began_unix_us"); ok && strings.Contains(line, "froze filesystems") {
			began, thawed = v, 0
		}
		if v, ok := logField(line, "thawed_unix_us"); ok {
			thawed = v
		}
	}
	if began == 0 || thawed < began {
		t.Fatalf("the agent's log has no freeze and thaw after it (%d, %d):\n%s", began, thawed, log)
	}
	return began, thawed
}

func logField(line, key string) (int64, bool) {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// postgresProof: a writer commits numbered rows while `backup create`
// freezes the guest; writing goes on; `backup restore`; PostgreSQL starts
// by itself, pg_amcheck finds no corruption, and the table holds every row
// acknowledged before the freeze began and none acknowledged after the
// thaw. Then the same with the agent stopped (a crash-consistent backup):
// PostgreSQL recovers from its WAL.
func postgresProof(t *testing.T, g *debianGuest) {
	d := g.d
	g.psql(t, "CREATE TABLE acks (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
	cycles := pgCycles(t)
	var frozen []string
	for c := 1; c <= cycles; c++ {
		g.exec(t, "systemd-run", "--unit=pgwriter", "--collect", "/bin/sh", "-c", writerScript)
		waitAcks(t, g, 50)
		bk := okJSON[model.Backup](t, d, "backup", "create", g.vm.ID)
		if bk.Consistency != model.Frozen {
			t.Fatalf("cycle %d: backup consistency %q, want frozen", c, bk.Consistency)
		}
		began, thawed := g.freezeWindow(t)
		n0 := len(g.acks(t))
		waitAcks(t, g, n0+50) // writing goes on after the thaw
		acks := g.acks(t)
		g.exec(t, "systemctl", "stop", "pgwriter")

		d.ok(t, "backup", "restore", g.vm.ID, bk.ID, "--yes")
		g.waitRunning(t)
		if st := strings.TrimSpace(g.exec(t, "systemctl", "is-active", "postgresql@15-main")); st != "active" {
			t.Fatalf("cycle %d: PostgreSQL after the restore: %s", c, st)
		}
		check := d.sj(t, "vm", "exec", g.vm.ID, "--timeout", "5m", "--", "runuser", "-u", "postgres", "--",
			"/usr/lib/postgresql/15/bin/pg_amcheck", "--install-missing", "--heapallindexed", "--all")
		if check.code != 0 {
			t.Fatalf("cycle %d: pg_amcheck after the restore: exit %d\n%s%s", c, check.code, check.stdout, check.stderr)
		}
		var count, lo, hi int64
		fmt.Sscanf(g.psql(t, "SELECT count(*), coalesce(min(n),0), coalesce(max(n),0) FROM acks"), "%d|%d|%d", &count, &lo, &hi)
		if lo != 1 || count != hi {
			t.Fatalf("cycle %d: the restored table holds %d rows from %d to %d, want 1..N without a gap", c, count, lo, hi)
		}
		// A row whose next row's INSERT ran before the freeze began was
		// acknowledged before it; a row whose own INSERT ran after the
		// thaw was acknowledged after it.
		var lastBefore, firstAfter int64 = 0, -1
		for i, a := range acks {
			if i+1 < len(acks) && acks[i+1].at < began {
				lastBefore = a.n
			}
			if a.at > thawed && firstAfter < 0 {
				firstAfter = a.n
			}
		}
		if hi < lastBefore {
			t.Fatalf("cycle %d: row %d was acknowledged before the freeze began, but the restored table ends at %d", c, lastBefore, hi)
		}
		if firstAfter < 0 {
			t.Fatalf("cycle %d: the writer acknowledged nothing after the thaw; the test proves nothing", c)
		}
		if hi >= firstAfter {
			t.Fatalf("cycle %d: row %d was acknowledged after the thaw, but the restored table holds rows to %d", c, firstAfter, hi)
		}
		frozen = append(frozen, fmt.Sprintf("%dms", bk.FrozenMS))
		t.Logf("cycle %d: frozen %d ms on the host, %.0f ms in the guest; %d rows acknowledged before the freeze, restored to %d, first after the thaw %d; %d acknowledged in all",
			c, bk.FrozenMS, float64(thawed-began)/1000, lastBefore, hi, firstAfter, len(acks))
	}
	t.Logf("frozen time of each of the %d cycles: %s", cycles, strings.Join(frozen, " "))

	// A crash-consistent backup: the agent is stopped, so nothing flushes
	// or freezes; the snapshot is what a power cut would leave.
	g.exec(t, "systemd-run", "--unit=pgwriter", "--collect", "/bin/sh", "-c", writerScript)
	waitAcks(t, g, 50)
	g.d.sj(t, "vm", "exec", g.vm.ID, "--", "systemctl", "stop", "superjolt-agent") // the exec dies with its agent
	bk := okJSON[model.Backup](t, d, "backup", "create", g.vm.ID)
	if bk.Consistency != model.Crash {
		t.Fatalf("a backup with the agent stopped: consistency %q, want crash", bk.Consistency)
	}
	d.ok(t, "backup", "restore", g.vm.ID, bk.ID, "--yes")
	g.waitRunning(t)
	check := d.sj(t, "vm", "exec", g.vm.ID, "--timeout", "5m", "--", "runuser", "-u", "postgres", "--",
		"/usr/lib/postgresql/15/bin/pg_amcheck", "--install-missing", "--heapallindexed", "--all")
	var count, hi int64
	fmt.Sscanf(g.psql(t, "SELECT count(*), coalesce(max(n),0) FROM acks"), "%d|%d", &count, &hi)
	// Debian's PostgreSQL logs to a file; the restored disk holds the log
	// up to the snapshot, and this boot's lines after it.
	recovery := g.exec(t, "tail", "-n", "30", "/var/log/postgresql/postgresql-15-main.log")
	if check.code != 0 || count != hi {
		t.Fatalf("after a crash-consistent restore: pg_amcheck exit %d, %d rows to %d\n%s%s\n%s", check.code, count, hi, check.stdout, check.stderr, recovery)
	}
	if !strings.Contains(recovery, "database system was not properly shut down; automatic recovery in progress") {
		t.Fatalf("after a crash-consistent restore PostgreSQL did not say it recovered from its WAL:\n%s", recovery)
	}
	t.Logf("crash-consistent backup (agent stopped): PostgreSQL found it was not shut down properly, replayed its WAL and started by itself; pg_amcheck clean, %d rows without a gap", count)
}

// waitAcks waits until the writer has acknowledged at least n rows.
func waitAcks(t testing.TB, g *debianGuest, n int) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out := strings.TrimSpace(g.exec(t, "sh", "-c", "wc -l < /run/acks 2>/dev/null || echo 0"))
		if got, _ := strconv.Atoi(out); got >= n {
			return
		}
	}
	st := g.d.sj(t, "vm", "exec", g.vm.ID, "--", "systemctl", "status", "pgwriter", "--no-pager")
	t.Fatalf("the writer did not acknowledge %d rows in 2 minutes:\n%s", n, st.stdout)
}

// TestCLIImageImport: `image import` sends a root file system tarball to
// superjoltd, which makes an image of it (listed with its OS and kernel);
// a name in use, a file of no known format and a truncated tarball are
// refused with a message that says what to do, and leave no image, no
// subvolume and no staged file behind.
func TestCLIImageImport(t *testing.T) {
	needDebian(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rec, err := images.RecipeNamed("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	tarball, err := images.DebianTarball(ctx, images.DebianOptions{Recipe: rec, Packages: []string{"postgresql"}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--pool-size", "20G")
	before := d.ok(t, "image", "list")

	junk := filepath.Join(t.TempDir(), "junk.img")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not an image "), 100_000), 0o644); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(t.TempDir(), "short.tar")
	run(t, "sh", "-c", "head -c 20000000 "+tarball+" > "+short)
	for _, c := range []struct {
		name, file, want string
	}{
		{"junk", junk, "unknown image format"},
		{"short", short, "cannot be unpacked"},
		{"no-file", filepath.Join(t.TempDir(), "missing.tar"), "no such file"},
		{"Bad/Name", junk, "image name"},
	} {
		r := d.sj(t, "image", "import", c.name, c.file)
		if r.code != exitUsage || !strings.Contains(r.stderr, c.want) {
			t.Fatalf("image import %s %s: exit %d %q, want invalid saying %q", c.name, filepath.Base(c.file), r.code, r.stderr, c.want)
		}
	}
	if after := d.ok(t, "image", "list"); after != before {
		t.Fatalf("failed imports changed the image list:\n%s\nwas:\n%s", after, before)
	}
	pool := filepath.Join(d.stateDir, "pool")
	for _, dir := range []string{filepath.Join(pool, "images"), filepath.Join(d.stateDir, "tmp")} {
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if dir == filepath.Join(pool, "images") && !slices.Equal(names, []string{appliance.DefaultImage}) {
			t.Fatalf("after failed imports %s holds %v, want only the built-in image", dir, names)
		}
		if dir != filepath.Join(pool, "images") && len(names) > 0 {
			t.Fatalf("after failed imports %s holds %v, want nothing", dir, names)
		}
	}

	start := time.Now()
	out := d.ok(t, "image", "import", "bookworm", tarball)
	t.Logf("image import of a %d MiB tarball: %s", fileSize(t, tarball)>>20, time.Since(start).Round(time.Millisecond))
	if !strings.Contains(out, "Debian GNU/Linux 12") {
		t.Fatalf("image import said %q", out)
	}
	list := d.ok(t, "image", "list")
	if !strings.Contains(list, "bookworm") || !strings.Contains(list, "cloud-amd64") {
		t.Fatalf("image list does not show the import with its kernel:\n%s", list)
	}
	if r := d.sj(t, "image", "import", "bookworm", tarball); r.code != exitConflict || !strings.Contains(r.stderr, "image rm bookworm") {
		t.Fatalf("an import under a name in use: exit %d %q, want a conflict", r.code, r.stderr)
	}
	if r := d.sj(t, "image", "rm", appliance.DefaultImage, "--yes"); r.code != exitConflict {
		t.Fatalf("image rm of the built-in image: exit %d %q, want a conflict", r.code, r.stderr)
	}
	d.ok(t, "image", "rm", "bookworm", "--yes")
	if list := d.ok(t, "image", "list"); strings.Contains(list, "bookworm") {
		t.Fatalf("image rm left it listed:\n%s", list)
	}
}

func fileSize(t testing.TB, path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
