package appliance

import "testing"

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":                    "plain text",
		"\x1b[1;32mgreen\x1b[0m ok":     "green ok",
		"\x1b]0;title\x07after":         "after",
		"\x1b]8;;http://x\x1b\\link":    "link",
		"bell\x07 and\tcr\r":            "bell and\tcr",
		"\x1bcreset":                    "reset",
		"bad \xff utf8":                 "bad \uFFFD utf8",
		"cut CSI \x1b[12":               "cut CSI ",
		"\x1b[?25l\x1b[2J\x1b[Hcleared": "cleared",
		"del\x7f":                       "del",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
