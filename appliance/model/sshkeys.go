package model

import (
	"bytes"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// SSH keys: an operator's OpenSSH public keys, put into root's
// authorized_keys in a VM's disk when the VM is created. A VM gets its
// account's default keys (Account.SSHKeys) followed by the keys given at
// its create (CreateVMRequest.SSHKeys), each key once; that list is the
// VM's SSHKeys. A VM made again from a backup, restored or resumed is not
// keyed again: its disk holds what it held.
const (
	// MaxSSHKeys bounds the keys of an account, of a create, and of a VM.
	MaxSSHKeys = 16
	// MaxSSHKeyLine bounds one authorized_keys line, in bytes.
	MaxSSHKeyLine = 8 << 10
)

// sshKeyExample is what a public key looks like, for error messages.
const sshKeyExample = "`ssh-ed25519 AAAA… you@host`"

// ParseSSHKeys reads OpenSSH public keys from text in the authorized_keys
// format (a .pub file, or several): one key a line; blank lines and lines
// starting with # are skipped. It returns each key normalized (options,
// type and base64 as ssh.MarshalAuthorizedKey writes them, comment). source
// names the text in errors ("k.pub", "stdin"). Empty text, a private key,
// a line that is no public key or longer than MaxSSHKeyLine, and more than
// MaxSSHKeys keys are refused (ErrInvalid) with what to do instead.
func ParseSSHKeys(source, text string) ([]string, error) {
	var out []string
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) > MaxSSHKeyLine {
			return nil, invalidf("%s line %d is %d bytes, more than the %d an SSH public key line may have; pass the .pub file", source, n, len(line), MaxSSHKeyLine)
		}
		if strings.Contains(line, "PRIVATE KEY") || strings.HasPrefix(line, "PuTTY-User-Key-File") {
			return nil, invalidf("%s looks like a private key; pass the .pub file (the public key), never the private one", source)
		}
		if strings.HasPrefix(line, "---- BEGIN SSH2 PUBLIC KEY") {
			return nil, invalidf("%s is an SSH2 (RFC 4716) public key; convert it to the OpenSSH format with `ssh-keygen -i -f %s` and pass that", source, source)
		}
		key, err := normalizeSSHKey(line)
		if err != nil {
			return nil, invalidf("%s line %d is not an OpenSSH public key (%v); a .pub file holds lines like %s", source, n, err, sshKeyExample)
		}
		out = append(out, key)
		if len(out) > MaxSSHKeys {
			return nil, invalidf("%s holds more than %d SSH keys; pass at most %d", source, MaxSSHKeys, MaxSSHKeys)
		}
	}
	if len(out) == 0 {
		return nil, invalidf("%s holds no SSH public key; pass a .pub file, which holds lines like %s", source, sshKeyExample)
	}
	return out, nil
}

// NormalizeSSHKeys checks keys as they come in a request (one key an
// element) with ParseSSHKeys, and returns them normalized and each once.
// No keys is no error: nil.
func NormalizeSSHKeys(keys []string) ([]string, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	if len(keys) > MaxSSHKeys {
		return nil, invalidf("ssh_keys holds %d keys, more than %d", len(keys), MaxSSHKeys)
	}
	for i, k := range keys {
		if strings.ContainsAny(k, "\r\n") && !strings.Contains(k, "PRIVATE KEY") {
			return nil, invalidf("SSH key %d has more than one line: send one key a list element", i+1)
		}
	}
	out, err := ParseSSHKeys("ssh_keys", strings.Join(keys, "\n"))
	if err != nil {
		return nil, err
	}
	return MergeSSHKeys(out)
}

// MergeSSHKeys joins lists of normalized keys in order, each key (its type
// and base64, whatever its comment) once, and refuses more than
// MaxSSHKeys.
func MergeSSHKeys(lists ...[]string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, l := range lists {
		for _, k := range l {
			id := sshKeyBlob(k)
			if seen[id] {
				continue
			}
			seen[id] = true
			out = append(out, k)
		}
	}
	if len(out) > MaxSSHKeys {
		return nil, invalidf("that makes %d SSH keys (the account's default keys and the ones given), more than %d; give fewer", len(out), MaxSSHKeys)
	}
	return out, nil
}

// normalizeSSHKey parses one authorized_keys line and writes it back the
// way ssh.MarshalAuthorizedKey does, with its options and comment.
func normalizeSSHKey(line string) (string, error) {
	pub, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return "", err
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return "", fmt.Errorf("more than one key on the line")
	}
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if len(options) > 0 {
		key = strings.Join(options, ",") + " " + key
	}
	if comment = strings.TrimSpace(comment); comment != "" {
		key += " " + comment
	}
	return key, nil
}

// sshKeyBlob returns the key of a normalized line (its type and base64),
// or the line when it does not parse.
func sshKeyBlob(line string) string {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return line
	}
	return string(pub.Marshal())
}

// SSHKeyLabel describes a key as ssh-keygen -l does: its type, its SHA256
// fingerprint and its comment ("ED25519 SHA256:Ab3… alice@laptop").
func SSHKeyLabel(line string) string {
	pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return clip(line)
	}
	typ := strings.ToUpper(strings.TrimPrefix(pub.Type(), "ssh-"))
	s := typ + " " + ssh.FingerprintSHA256(pub)
	if comment != "" {
		s += " " + comment
	}
	return s
}
