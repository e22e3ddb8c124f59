package images

import (
	"syscall"
	"testing"
)

type syscallStat struct{ blocks int64 }

func stat(t *testing.T, path string, st *syscallStat) {
	t.Helper()
	var s syscall.Stat_t
	if err := syscall.Stat(path, &s); err != nil {
		t.Fatal(err)
	}
	st.blocks = s.Blocks
}
