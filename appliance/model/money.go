package model

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Micro is an amount of money in micro-credits (one credit is 1,000,000
// micro-credits). Money is never a float.
type Micro int64

// Credit is one credit.
const Credit Micro = 1_000_000

// MaxAmount bounds a single top-up or opening balance: a billion credits is
// far beyond any real account and keeps every sum far from overflow.
const MaxAmount = 1_000_000_000 * Credit

// ParseCredits parses a positive amount of credits written in decimal with at
// most six digits after the point ("10", "2.5", "0.000001").
func ParseCredits(s string) (Micro, error) { return parseCredits(s, false) }

// ParseSignedCredits parses an adjustment: a non-zero amount of credits
// that may be negative ("-5", "+2.5", "0.000001"), at most MaxAmount either
// way.
func ParseSignedCredits(s string) (Micro, error) { return parseCredits(s, true) }

func parseCredits(s string, signed bool) (Micro, error) {
	orig := s
	s = strings.TrimSpace(s)
	bad := func(why string) (Micro, error) {
		if signed {
			return 0, invalidf("amount %q %s; write a number of credits with at most 6 decimals, like -25 or 2.5", clip(orig), why)
		}
		return 0, invalidf("amount %q %s; write a positive number of credits with at most 6 decimals, like 25 or 2.5", clip(orig), why)
	}
	if s == "" {
		return bad("is empty")
	}
	neg := false
	if s[0] == '-' {
		if !signed {
			return bad("is negative")
		}
		neg, s = true, s[1:]
	} else {
		s = strings.TrimPrefix(s, "+")
	}
	whole, frac, hasPoint := strings.Cut(s, ".")
	if whole == "" && (!hasPoint || frac == "") {
		return bad("is not a number")
	}
	if len(frac) > 6 {
		return bad("has more than 6 decimals")
	}
	for _, part := range []string{whole, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return bad("is not a number")
			}
		}
	}
	if whole == "" {
		whole = "0"
	}
	if len(strings.TrimLeft(whole, "0")) > 10 {
		return bad(fmt.Sprintf("is more than the %s allowed at once", MaxAmount))
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return bad("is not a number")
	}
	var f int64
	if frac != "" {
		f, _ = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
	}
	m := Micro(w)*Credit + Micro(f)
	if m <= 0 {
		return bad("is zero")
	}
	if m > MaxAmount {
		return bad(fmt.Sprintf("is more than the %s allowed at once", MaxAmount))
	}
	if neg {
		m = -m
	}
	return m, nil
}

// ValidateAdjustment checks an adjustment: an amount that is not zero, at
// most MaxAmount either way, and a reason: printable text, not blank, at
// most MaxReasonLen bytes.
func ValidateAdjustment(m Micro, reason string) error {
	switch {
	case m == 0:
		return invalidf("an adjustment of zero changes nothing; give a positive or negative number of credits")
	case m > MaxAmount || m < -MaxAmount:
		return invalidf("adjustment %s is more than the %s allowed at once", m, MaxAmount)
	}
	switch {
	case strings.TrimSpace(reason) == "":
		return invalidf("an adjustment needs a reason (--reason TEXT): the ledger keeps it for whoever reads it later")
	case !utf8.ValidString(reason):
		return invalidf("the reason is not valid UTF-8")
	case len(reason) > MaxReasonLen:
		return invalidf("the reason is %d bytes long; keep it to %d", len(reason), MaxReasonLen)
	}
	for _, r := range reason {
		if !unicode.IsPrint(r) {
			return invalidf("the reason holds a control character (%U); write it on one line, in plain text", r)
		}
	}
	return nil
}

// ValidateAmount checks an amount given in micro-credits (as the API takes it).
func ValidateAmount(m Micro) error {
	switch {
	case m <= 0:
		return invalidf("amount %d micro-credits must be positive", int64(m))
	case m > MaxAmount:
		return invalidf("amount %s is more than the %s allowed at once", m, MaxAmount)
	}
	return nil
}

// String formats m in credits with no trailing zeros: "12.5", "-0.000001", "3".
func (m Micro) String() string {
	neg := m < 0
	u := uint64(m)
	if neg {
		u = uint64(-m)
	}
	whole, frac := u/uint64(Credit), u%uint64(Credit)
	s := strconv.FormatUint(whole, 10)
	if frac != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%06d", frac), "0")
	}
	if neg {
		s = "-" + s
	}
	return s
}
