package model

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Bounds of an account token's name and lifetime, checked by the API's
// wire types and by the appliance alike.
const (
	MaxTokenNameLen = 64 // characters
	// MinTokenLifetime and MaxTokenLifetime bound a token's expiry; a
	// lifetime of 0 is a token that does not expire.
	MinTokenLifetime = time.Minute
	MaxTokenLifetime = 3650 * 24 * time.Hour
)

// ValidateTokenName checks an account token's name: 1 to 64 printable
// characters, valid UTF-8, no leading or trailing spaces.
func ValidateTokenName(s string) error {
	switch {
	case s == "":
		return invalidf("token name is empty; give a name such as \"laptop\" or \"assistant\"")
	case !utf8.ValidString(s):
		return invalidf("token name is not valid UTF-8")
	case utf8.RuneCountInString(s) > MaxTokenNameLen:
		return invalidf("token name %q is longer than %d characters", clip(s), MaxTokenNameLen)
	case strings.TrimSpace(s) != s:
		return invalidf("token name %q has leading or trailing spaces", clip(s))
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return invalidf("token name %q has a control or non-printable character", clip(s))
		}
	}
	return nil
}

// ValidateTokenLifetime checks how long a new token lives: 0 (it does not
// expire), or from MinTokenLifetime to MaxTokenLifetime.
func ValidateTokenLifetime(d time.Duration) error {
	if d == 0 || d >= MinTokenLifetime && d <= MaxTokenLifetime {
		return nil
	}
	return invalidf("a token expires after %s to %d days (or never: leave the expiry out), not %s", MinTokenLifetime, MaxTokenLifetime/(24*time.Hour), d)
}
