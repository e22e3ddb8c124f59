package appliance

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/ext4"
)

// newSSHKey returns a fresh ed25519 public key as an authorized_keys line.
func newSSHKey(t testing.TB, comment string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment
}

// extImage writes an image the stub hypervisor accepts whose rootfs.img
// is a real ext4 filesystem with a /root, made with mkfs.ext4 -d.
func extImage(ctx context.Context, dir string) error {
	if err := fakeImage(ctx, dir); err != nil {
		return err
	}
	src, err := os.MkdirTemp("", "sj-rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	if err := os.Mkdir(filepath.Join(src, "root"), 0o700); err != nil {
		return err
	}
	img := filepath.Join(dir, RootfsFile)
	if err := os.Truncate(img, 32<<20); err != nil {
		return err
	}
	bin, err := ext4.Tool("mkfs.ext4")
	if err != nil {
		return err
	}
	if out, err := exec.Command(bin, "-q", "-F", "-d", src, img).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 -d: %v: %s", err, out)
	}
	return nil
}

// diskFile reads path in the ext4 disk of VM id with debugfs.
func (e *env) diskFile(id, path string) string {
	e.t.Helper()
	dir, err := e.pool.VMPath(id)
	if err != nil {
		e.t.Fatal(err)
	}
	bin, err := ext4.Tool("debugfs")
	if err != nil {
		e.t.Skip("needs debugfs (apt-get install e2fsprogs)")
	}
	out, err := exec.Command(bin, "-R", "cat "+path, filepath.Join(dir, RootfsFile)).Output()
	if err != nil {
		e.t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

// TestCreateWithSSHKeys: a VM gets its account's default keys, then the
// ones given at create, each once; they are on its record and in root's
// authorized_keys in its disk before its first boot. Clearing the
// account's keys leaves later VMs with only their own.
func TestCreateWithSSHKeys(t *testing.T) {
	requireE2fs(t)
	e := newEnv(t, envOptions{imageFill: extImage})
	ctx := context.Background()
	acct := e.account("keyed", 10*model.Credit, 0)
	def, own := newSSHKey(t, "operator@desk"), newSSHKey(t, "alice@laptop")

	got, err := e.a.SetAccountSSHKeys(ctx, acct.ID, []string{def})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.SSHKeys, []string{def}) {
		t.Fatalf("account keys = %q", got.SSHKeys)
	}
	if stored, _ := e.a.Account(ctx, acct.ID); !slices.Equal(stored.SSHKeys, []string{def}) {
		t.Fatalf("stored account keys = %q", stored.SSHKeys)
	}

	// The default key given again (another comment) is not doubled.
	again := strings.Replace(def, "operator@desk", "operator@elsewhere", 1)
	vm, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct.ID, Tier: "nano", SSHKeys: []string{own, again}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{def, own}; !slices.Equal(vm.SSHKeys, want) {
		t.Errorf("VM keys = %q, want %q", vm.SSHKeys, want)
	}
	if got, want := e.diskFile(vm.ID, ext4.AuthorizedKeysPath), def+"\n"+own+"\n"; got != want {
		t.Errorf("authorized_keys in the disk = %q, want %q", got, want)
	}
	// The image itself is untouched.
	imgDir, _ := e.pool.ImagePath(DefaultImage)
	bin, _ := ext4.Tool("debugfs")
	if out, _ := exec.Command(bin, "-R", "stat /root/.ssh", filepath.Join(imgDir, RootfsFile)).CombinedOutput(); !strings.Contains(string(out), "not found") {
		t.Errorf("the image got a /root/.ssh: %s", out)
	}

	// Cleared: the next VM has only its own key; a VM without keys has
	// no authorized_keys written at all.
	if got, err := e.a.SetAccountSSHKeys(ctx, acct.ID, nil); err != nil || len(got.SSHKeys) != 0 {
		t.Fatalf("clearing the account's keys: %q, %v", got.SSHKeys, err)
	}
	vm2, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct.ID, Tier: "nano", SSHKeys: []string{own}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(vm2.SSHKeys, []string{own}) {
		t.Errorf("VM keys after clearing the account's = %q", vm2.SSHKeys)
	}
	vm3 := e.vm(acct.ID)
	if len(vm3.SSHKeys) != 0 {
		t.Errorf("a VM created without keys has %q", vm3.SSHKeys)
	}
	if evs := e.eventsOfType("account.ssh_keys"); len(evs) != 2 {
		t.Errorf("account.ssh_keys events: %+v, want 2", evs)
	}
	e.checkConsistent()
}

// TestCreateWithBadSSHKeys: keys that are no public keys, too many keys,
// or keys for a disk that holds no ext filesystem are refused with what to
// do, and nothing is created; bad account keys leave the account as it
// was.
func TestCreateWithBadSSHKeys(t *testing.T) {
	requireE2fs(t)
	e := newEnv(t, envOptions{imageFill: extImage})
	ctx := context.Background()
	if err := e.pool.CreateImage(ctx, "raw", func(dir string) error { return fakeImage(ctx, dir) }); err != nil {
		t.Fatal(err)
	}
	e.reopen() // New seeds the image row
	acct := e.account("keyless", 10*model.Credit, 0)
	good := newSSHKey(t, "ok")
	many := make([]string, model.MaxSSHKeys)
	for i := range many {
		many[i] = newSSHKey(t, "k")
	}
	if _, err := e.a.SetAccountSSHKeys(ctx, acct.ID, many); err != nil {
		t.Fatal(err)
	}
	evsBefore := len(e.eventsWhere(func(model.Event) bool { return true }))

	tests := []struct {
		name  string
		req   CreateVMRequest
		code  string
		inErr string
	}{
		{"private key", CreateVMRequest{SSHKeys: []string{"-----BEGIN OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAA"}}, "invalid", "looks like a private key; pass the .pub file"},
		{"not a key", CreateVMRequest{SSHKeys: []string{"ssh-ed25519 AAAA nope"}}, "invalid", "not an OpenSSH public key"},
		{"blank", CreateVMRequest{SSHKeys: []string{"  "}}, "invalid", "holds no SSH public key"},
		{"too long", CreateVMRequest{SSHKeys: []string{"ssh-ed25519 " + strings.Repeat("A", model.MaxSSHKeyLine)}}, "invalid", "more than the 8192"},
		{"too many with the account's", CreateVMRequest{SSHKeys: []string{good}}, "invalid", "more than 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.AccountID, tt.req.Tier = acct.ID, "nano"
			_, err := e.a.CreateVM(ctx, tt.req)
			wantCode(t, err, tt.code)
			if !strings.Contains(err.Error(), tt.inErr) {
				t.Errorf("error %q does not say %q", err, tt.inErr)
			}
		})
	}
	if vms, _ := e.a.VMs(ctx, VMFilter{}); len(vms) != 0 {
		t.Errorf("refused creates left %d VMs", len(vms))
	}
	if n := len(e.eventsWhere(func(model.Event) bool { return true })); n != evsBefore {
		t.Errorf("refused creates wrote %d events", n-evsBefore)
	}

	// A bad default key is refused and the account keeps its keys.
	_, err := e.a.SetAccountSSHKeys(ctx, acct.ID, []string{good, "-----BEGIN RSA PRIVATE KEY-----"})
	wantCode(t, err, "invalid")
	if a, _ := e.a.Account(ctx, acct.ID); !slices.Equal(a.SSHKeys, many) {
		t.Errorf("a refused change altered the account's keys: %d keys", len(a.SSHKeys))
	}
	if _, err := e.a.SetAccountSSHKeys(ctx, acct.ID, nil); err != nil {
		t.Fatal(err)
	}

	// A disk with no ext filesystem cannot take keys: the create fails
	// and is undone, and the error says what to do.
	_, err = e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct.ID, Tier: "nano", Image: "raw", SSHKeys: []string{good}})
	wantCode(t, err, "invalid")
	if !strings.Contains(err.Error(), "without --ssh-key") {
		t.Errorf("error does not say what to do: %v", err)
	}
	if vms, _ := e.a.VMs(ctx, VMFilter{}); len(vms) != 0 {
		t.Errorf("a failed create left %d VMs", len(vms))
	}
	if disk, _ := e.pool.VMs(ctx); len(disk) != 0 {
		t.Errorf("a failed create left subvolumes %v", disk)
	}
	if h := e.hv.(*stubHypervisor); h.launches != 0 {
		t.Errorf("a VM whose keys could not be written was launched %d times", h.launches)
	}
	e.checkConsistent()
}
