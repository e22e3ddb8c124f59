package model

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// newSSHKey returns a fresh ed25519 public key as an authorized_keys line
// with comment.
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

func TestParseSSHKeys(t *testing.T) {
	a, b := newSSHKey(t, "alice@laptop"), newSSHKey(t, "bob@desk")
	fields := strings.Fields(a)
	tests := []struct {
		name, text string
		want       []string
		err        string // in the error; "" wants none
	}{
		{"one", a + "\n", []string{a}, ""},
		{"two, blank lines and comments", "# keys\n\n" + a + "\r\n  " + b + "  \n", []string{a, b}, ""},
		{"spaces normalized", fields[0] + "   " + fields[1] + "\t" + fields[2], []string{a}, ""},
		{"options kept", `from="10.0.0.0/8",no-pty ` + a, []string{`from="10.0.0.0/8",no-pty ` + a}, ""},
		{"empty", "", nil, "holds no SSH public key"},
		{"only comments", "# nothing\n\n", nil, "holds no SSH public key"},
		{"private", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n", nil, "k.pub looks like a private key; pass the .pub file"},
		{"pem private", "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n", nil, "looks like a private key"},
		{"ssh2", "---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n", nil, "ssh-keygen -i -f k.pub"},
		{"garbage", a + "\nhello world\n", nil, "k.pub line 2 is not an OpenSSH public key"},
		{"bad base64", "ssh-ed25519 AAAA!!!! x", nil, "line 1 is not an OpenSSH public key"},
		{"long line", "ssh-ed25519 " + strings.Repeat("A", MaxSSHKeyLine), nil, "more than the 8192"},
		{"too many", strings.Repeat(a+"\n", MaxSSHKeys+1), nil, "more than 16 SSH keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSSHKeys("k.pub", tt.text)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParseSSHKeys = %q, %v; want an invalid error with %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("ParseSSHKeys = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMergeSSHKeys(t *testing.T) {
	a, b := newSSHKey(t, "alice@laptop"), newSSHKey(t, "bob@desk")
	aAgain := strings.Replace(a, "alice@laptop", "alice@other", 1)
	got, err := MergeSSHKeys([]string{a}, []string{aAgain, b})
	if err != nil || strings.Join(got, "|") != a+"|"+b {
		t.Fatalf("MergeSSHKeys = %q, %v; want the account's key once, then the new one", got, err)
	}
	many := make([]string, MaxSSHKeys)
	for i := range many {
		many[i] = newSSHKey(t, "k")
	}
	if _, err := MergeSSHKeys(many, []string{b}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("MergeSSHKeys of %d keys: %v; want invalid", MaxSSHKeys+1, err)
	}
	if keys, err := NormalizeSSHKeys(nil); keys != nil || err != nil {
		t.Fatalf("NormalizeSSHKeys(nil) = %q, %v", keys, err)
	}
	if _, err := NormalizeSSHKeys([]string{a + "\n" + b}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("NormalizeSSHKeys of two keys in one element: %v; want invalid", err)
	}
	if l := SSHKeyLabel(a); !strings.HasPrefix(l, "ED25519 SHA256:") || !strings.HasSuffix(l, " alice@laptop") {
		t.Errorf("SSHKeyLabel = %q", l)
	}
}
