package model

import (
	"crypto/rand"
	"strings"
)

// Kind is the kind of object an id names. The id of an object is its kind's
// prefix followed by a fixed number of lowercase letters and digits:
//
//	account    ac-xxxxxx
//	VM         vm-xxxxxx
//	backup     bk-xxxxxxxxxx
//	operation  op-xxxxxxxxxx
//
// VM and backup ids become path components in the storage pool, so the
// alphabet is deliberately tiny: no '/', '.', NUL or upper case can appear.
type Kind string

const (
	KindAccount   Kind = "ac"
	KindVM        Kind = "vm"
	KindBackup    Kind = "bk"
	KindOperation Kind = "op"
	// KindToken ("tk") is in tokens.go.
)

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// idLen is the number of random characters after the prefix and dash.
var idLen = map[Kind]int{
	KindAccount:   6,
	KindVM:        6,
	KindBackup:    10,
	KindOperation: 10,
	KindToken:     10,
}

var kindNoun = map[Kind]string{
	KindAccount:   "an account",
	KindVM:        "a VM",
	KindBackup:    "a backup",
	KindOperation: "an operation",
	KindToken:     "a token",
}

// NewID returns a fresh random id of kind k. It does not know which ids are
// taken: the store checks that an id was never used before handing it out.
func NewID(k Kind) string {
	n, ok := idLen[k]
	if !ok {
		panic("model: NewID of unknown kind " + string(k))
	}
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		panic("model: crypto/rand failed: " + err.Error())
	}
	var b strings.Builder
	b.Grow(len(k) + 1 + n)
	b.WriteString(string(k))
	b.WriteByte('-')
	for _, c := range buf {
		// 256 % 36 = 4: the first four letters are very slightly more likely,
		// which costs nothing here (ids are checked for reuse, not secrets).
		b.WriteByte(idAlphabet[int(c)%len(idAlphabet)])
	}
	return b.String()
}

// ValidateID reports whether id is a well-formed id of kind k, with an error
// that shows the expected form.
func ValidateID(k Kind, id string) error {
	n, ok := idLen[k]
	if !ok {
		return invalidf("unknown id kind %q", string(k))
	}
	want := string(k) + "-"
	if len(id) != len(want)+n || !strings.HasPrefix(id, want) || !isIDChars(id[len(want):]) {
		return invalidf("%q is not %s id: expected %s followed by %d lowercase letters or digits, like %s",
			clip(id), kindNoun[k], want, n, example(k))
	}
	return nil
}

// KindOf returns the kind of a well-formed id, or "" if id is not one.
func KindOf(id string) Kind {
	for k := range idLen {
		if ValidateID(k, id) == nil {
			return k
		}
	}
	return ""
}

func isIDChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func example(k Kind) string {
	return string(k) + "-" + strings.Repeat("a1b2c3d4e5", 2)[:idLen[k]]
}

// clip shortens s for an error message, so absurd input does not make an
// absurd message.
func clip(s string) string {
	const max = 40
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
