package testvm_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/appliance/images/imagetest"
	"github.com/superjolt/superjolt/guest"
	"github.com/superjolt/superjolt/testvm"
)

// TestBootImported imports the Debian 12 tarball (mmdebstrap, with postgresql) as it is and as a
// qcow2 disk made from it with mkfs.ext4, sfdisk and qemu-img, boots each, and waits for systemd
// to have started every unit.
func TestBootImported(t *testing.T) {
	if m := images.Missing(); len(m) > 0 {
		t.Skipf("test VM needs: %s", strings.Join(m, ", "))
	}
	imagetest.Need(t, true, "mmdebstrap", "tar", "mkfs.ext4", "sfdisk", "qemu-img", "mount", "losetup")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	recipe, err := images.RecipeNamed("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	tarball, err := images.DebianTarball(ctx, images.DebianOptions{Recipe: recipe, Packages: []string{"postgresql"}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(t.TempDir(), "superjolt-agent")
	if err := images.BuildAgent(ctx, "", agent); err != nil {
		t.Fatal(err)
	}

	importAndBoot := func(t *testing.T, src, hostname string) {
		tmp := t.TempDir()
		start := time.Now()
		img, err := images.Import(ctx, src, filepath.Join(t.TempDir(), "image"), images.ImportOptions{Agent: agent, TempDir: tmp, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			t.Errorf("Import left %d files in TempDir", len(left))
		}
		t.Logf("imported %s in %v: %s, kernel %s", filepath.Base(src), time.Since(start).Round(100*time.Millisecond), img.OS, img.KernelRelease)

		start = time.Now()
		vm := testvm.Boot(t, testvm.Options{Image: img, MemoryMiB: 512, Hostname: hostname, BootTimeout: 180 * time.Second})
		t.Logf("agent ready after %v", time.Since(start).Round(100*time.Millisecond))
		res, err := vm.Client().Exec(ctx, guest.ExecRequest{Path: "/bin/systemctl", Args: []string{"is-system-running", "--wait"}, Timeout: 170 * time.Second})
		if err != nil {
			t.Fatalf("systemctl is-system-running: %v\nconsole:\n%s", err, vm.Console())
		}
		state := strings.TrimSpace(string(res.Stdout))
		t.Logf("systemd %s after %v", state, time.Since(start).Round(100*time.Millisecond))
		if state != "running" {
			failed, _ := vm.Client().Exec(ctx, guest.ExecRequest{Path: "/bin/systemctl", Args: []string{"--failed", "--no-pager", "--full"}, Timeout: 30 * time.Second})
			var jobs string
			if j, err := vm.Client().Exec(ctx, guest.ExecRequest{Path: "/bin/systemctl", Args: []string{"list-jobs", "--no-pager"}, Timeout: 30 * time.Second}); err == nil {
				jobs = string(j.Stdout)
			}
			t.Fatalf("systemd is %q (exit %d), want running; failed units:\n%s\njobs:\n%s", state, res.ExitCode, failed.Stdout, jobs)
		}
		if got := strings.TrimSpace(vm.Exec(t, "/bin/cat", "/proc/sys/kernel/hostname")); got != hostname {
			t.Errorf("hostname %q, want %q", got, hostname)
		}
		if ping, err := vm.Client().Ping(ctx); err != nil || ping.Hostname != hostname {
			t.Errorf("ping: hostname %q, %v; want %q", ping.Hostname, err, hostname)
		}
		if got := strings.TrimSpace(vm.Exec(t, "/bin/uname", "-r")); got != img.KernelRelease {
			t.Errorf("uname -r = %q, want %q", got, img.KernelRelease)
		}
		if got := strings.TrimSpace(vm.Exec(t, "/bin/cat", "/etc/machine-id")); len(got) != 32 {
			t.Errorf("machine id %q: systemd made none", got)
		}
		// sshd made host keys of its own on this first boot.
		vm.Exec(t, "/bin/systemctl", "is-active", "ssh.service")
		if keys := vm.Exec(t, "/bin/sh", "-c", "ls /etc/ssh/ssh_host_*_key"); !strings.Contains(keys, "ssh_host_ed25519_key") {
			t.Errorf("host keys: %q", keys)
		}
	}

	t.Run("tarball", func(t *testing.T) {
		importAndBoot(t, tarball, "imported-tar")
	})
	t.Run("qcow2", func(t *testing.T) {
		start := time.Now()
		dir := t.TempDir()
		tree := filepath.Join(dir, "root")
		imagetest.Unpack(t, tarball, tree)
		ext4 := filepath.Join(dir, "root.ext4")
		imagetest.MakeExt4(t, tree, ext4)
		os.RemoveAll(tree)
		raw := filepath.Join(dir, "disk.raw")
		imagetest.MakeDisk(t, ext4, raw)
		os.Remove(ext4)
		qcow2 := filepath.Join(dir, "debian-12.qcow2")
		imagetest.QCOW2(t, raw, qcow2)
		os.Remove(raw)
		t.Logf("made %s in %v", filepath.Base(qcow2), time.Since(start).Round(100*time.Millisecond))
		importAndBoot(t, qcow2, "imported-qcow2")
	})
}
