package main

import (
	"fmt"
	"strconv"
	"strings"
)

// parseSize parses a size with a binary unit: "20G" and "20GiB" are 20×2³⁰
// bytes; "512M", "1T", "4096" (bytes) too.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	shift := 0
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		}
		if shift > 0 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is not a size: write it like 20G, 512M or 1T", s)
	}
	return n << shift, nil
}
