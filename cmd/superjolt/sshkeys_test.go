package main

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/superjolt/superjolt/appliance/model"
)

const (
	testKeyA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"
	testKeyB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9Cjdrj1JoU9J0xCa0Hjn8XvZ4x2dT5r0m2ODQrd5aa bob@desk"
)

// TestReadSSHKeys: files and stdin are read and merged, each key once; a
// private key is named by its file; stdin twice and a missing file are
// usage errors.
func TestReadSSHKeys(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a.pub", testKeyA+"\n")
	both := write("both.pub", "# two\n"+testKeyA+"\n"+testKeyB+"\n")
	priv := write("id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")

	o := &globalOptions{stdin: strings.NewReader(testKeyB + "\n")}
	keys, err := o.readSSHKeys([]string{a, "-", both})
	if err != nil || strings.Join(keys, "|") != testKeyA+"|"+testKeyB {
		t.Fatalf("readSSHKeys = %q, %v", keys, err)
	}
	for _, tt := range []struct {
		files []string
		msg   string
	}{
		{[]string{priv}, priv + " looks like a private key; pass the .pub file"},
		{[]string{"-", "-"}, "given twice"},
		{[]string{filepath.Join(dir, "nope.pub")}, "no such file"},
		{[]string{write("empty.pub", "\n")}, "holds no SSH public key"},
	} {
		o := &globalOptions{stdin: strings.NewReader(testKeyA)}
		_, err := o.readSSHKeys(tt.files)
		if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("readSSHKeys(%q) = %v; want invalid saying %q", tt.files, err, tt.msg)
		}
	}
}

func TestSSHLine(t *testing.T) {
	ip := netip.MustParseAddr("10.77.0.5")
	keys := []string{testKeyA}
	tests := []struct {
		vm   model.VM
		want string
	}{
		{model.VM{IP: ip}, ""},
		{model.VM{SSHKeys: keys}, ""},
		{model.VM{IP: ip, SSHKeys: keys}, "ssh root@10.77.0.5"},
		{model.VM{IP: ip, SSHKeys: keys, Ports: []model.Port{{Proto: "tcp", Number: 8080, GuestPort: 80}, {Proto: "tcp", Number: 2222, GuestPort: 22}}},
			"ssh root@10.77.0.5 (from elsewhere: ssh -p 2222 root@THIS-HOST)"},
		{model.VM{IP: ip, SSHKeys: keys, Ports: []model.Port{{Proto: "udp", Number: 22}}}, "ssh root@10.77.0.5"},
	}
	for _, tt := range tests {
		if got := sshLine(tt.vm); got != tt.want {
			t.Errorf("sshLine(%+v) = %q, want %q", tt.vm, got, tt.want)
		}
	}
}
