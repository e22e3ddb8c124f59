package guest

import (
	"debug/elf"
	"fmt"
)

// CheckStatic returns an error unless the agent binary at path is a
// statically linked ELF executable. The agent is a guest's init (or runs
// in guests whose libraries are not the host's): one linked against the
// host's libc makes every boot fail with "Failed to execute /init", found
// otherwise only after the boot timeouts. The error says how to build it.
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("the agent %s is not an ELF executable (%v): build it with `make agent`", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		interp := "a program interpreter"
		if b := make([]byte, p.Filesz); p.Filesz > 0 && p.Filesz < 4096 {
			if _, err := p.ReadAt(b, 0); err == nil {
				interp = string(b[:len(b)-1])
			}
		}
		return fmt.Errorf("the agent %s is dynamically linked (it needs %s, which a guest does not have): "+
			"build it static with `make agent` (CGO_ENABLED=0 go build -o bin/ ./cmd/superjolt-agent)", path, interp)
	}
	return nil
}
