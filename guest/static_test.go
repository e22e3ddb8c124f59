package guest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCheckStatic: a statically linked binary passes; a dynamically linked
// one and a file that is no executable are refused, saying how to build
// the agent.
func TestCheckStatic(t *testing.T) {
	static := "/bin/busybox" // Debian's busybox-static
	if _, err := os.Stat(static); err != nil {
		t.Skip("needs a static binary: busybox-static (scripts/install-deps installs it)")
	}
	if err := CheckStatic(static); err != nil {
		t.Errorf("CheckStatic(%s) = %v, want nil", static, err)
	}
	dynamic, err := exec.LookPath("ls")
	if err != nil {
		t.Skip("needs ls")
	}
	err = CheckStatic(dynamic)
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") || !strings.Contains(err.Error(), "make agent") ||
		!strings.Contains(err.Error(), "ld-linux") {
		t.Errorf("CheckStatic(%s) = %v, want a refusal naming the interpreter and make agent", dynamic, err)
	}
	notELF := t.TempDir() + "/agent"
	os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if err := CheckStatic(notELF); err == nil || !strings.Contains(err.Error(), "make agent") {
		t.Errorf("CheckStatic of a script = %v", err)
	}
}
