// Package version says which build of superjolt a binary is: the CLI's
// --version, and the daemon's in `superjolt status`, so that an operator
// sees a CLI and a daemon that do not match.
package version

import (
	"runtime/debug"
	"strings"
	"sync"
)

// version is set at link time by release builds
// (-ldflags "-X github.com/superjolt/superjolt/version.version=1.2.3");
// empty otherwise.
var version = ""

var once = sync.OnceValue(func() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, modified := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	v := info.Main.Version
	if v == "" || v == "(devel)" || strings.Count(v, "-") >= 2 { // a pseudo-version says no more than the revision
		v = "dev"
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v += " (" + rev
		if modified {
			v += ", modified"
		}
		v += ")"
	}
	return v
})

// String returns the build's version: the link-time one, or "dev" with the
// git revision it was built from.
func String() string { return once() }
