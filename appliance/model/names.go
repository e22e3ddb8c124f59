package model

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ValidateAccountName checks a person's or customer's name for an account:
// 1 to 64 characters, printable, no leading or trailing spaces.
func ValidateAccountName(s string) error {
	switch {
	case s == "":
		return invalidf("account name is empty; give a name such as \"alice\"")
	case !utf8.ValidString(s):
		return invalidf("account name is not valid UTF-8")
	case utf8.RuneCountInString(s) > 64:
		return invalidf("account name %q is longer than 64 characters", clip(s))
	case strings.TrimSpace(s) != s:
		return invalidf("account name %q has leading or trailing spaces", clip(s))
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return invalidf("account name %q has a control or non-printable character", clip(s))
		}
	}
	return nil
}

// ValidateVMName checks a VM's name, which is also its hostname: 1 to 63
// lowercase letters, digits and dashes, not starting or ending with a dash.
func ValidateVMName(s string) error {
	if !isLabel(s) {
		return invalidf("VM name %q is not allowed: use 1-63 lowercase letters, digits and dashes, not starting or ending with a dash (like web-1)", clip(s))
	}
	return nil
}

// ValidateImageName checks an image name: 1 to 64 lowercase letters, digits,
// dashes, dots and underscores, starting with a letter or digit.
func ValidateImageName(s string) error {
	ok := s != "" && len(s) <= 64 && isAlnum(s[0])
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = isAlnum(c) || c == '-' || c == '.' || c == '_'
	}
	if !ok {
		return invalidf("image name %q is not allowed: use 1-64 lowercase letters, digits, '-', '.', '_', starting with a letter or digit", clip(s))
	}
	return nil
}

// ValidateTierName checks a tier name (same alphabet as VM names).
func ValidateTierName(s string) error {
	if !isLabel(s) {
		return invalidf("tier name %q is not allowed: use lowercase letters, digits and dashes; `superjolt tier list` shows the tiers", clip(s))
	}
	return nil
}

// ValidateDomain checks a DNS name to attach to a VM: labels of 1-63 lowercase
// letters, digits and dashes, at least two labels, 253 characters at most.
func ValidateDomain(s string) error {
	bad := func() error {
		return invalidf("domain %q is not a valid DNS name: use lowercase labels of letters, digits and dashes joined by dots, like app.example.com", clip(s))
	}
	if strings.Contains(s, "*") {
		return invalidf("domain %q: wildcards are not supported; attach each name (app.example.com, www.example.com)", clip(s))
	}
	if len(s) > 253 {
		return bad()
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return bad()
	}
	for _, l := range labels {
		if !isLabel(l) {
			return bad()
		}
	}
	return nil
}

func isLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// Count says how many of noun there are, in English: "1 backup",
// "3 backups", "no backups".
func Count(n int, noun string) string {
	switch n {
	case 0:
		return "no " + noun + "s"
	case 1:
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// NormalizeDomain returns a DNS name as the appliance keeps it: lowercase
// (DNS names are not case sensitive), without a final dot.
//
// An internationalized name is taken in its ASCII (IDNA, "xn--") form, the
// one DNS and TLS use: bücher.example becomes xn--bcher-kva.example.
func NormalizeDomain(s string) string {
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	if !isASCII(s) {
		if a, err := idna.Lookup.ToASCII(s); err == nil {
			s = a
		}
	}
	return s
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// ValidateFileName checks a file's base name given for the record (an
// imported image's source): empty, or 1 to 255 printable characters
// without a slash.
func ValidateFileName(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > 255 || strings.ContainsAny(s, "/\x00") || s == "." || s == ".." {
		return fmt.Errorf("file name %q must be a plain file name of at most 255 bytes", clip(s))
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("file name %q has a character that is not printable", clip(s))
		}
	}
	return nil
}
