package systemd

import (
	"strings"
	"testing"
	"time"
)

func TestUnitNames(t *testing.T) {
	for _, tc := range []struct {
		id   string
		unit string
		ok   bool
	}{
		{"vm-abc123", "superjolt-vm-vm-abc123.service", true},
		{"vm-0", "superjolt-vm-vm-0.service", true},
		{"vm-" + strings.Repeat("a", 32), "superjolt-vm-vm-" + strings.Repeat("a", 32) + ".service", true},
		{"vm-" + strings.Repeat("a", 33), "", false},
		{"vm-", "", false},
		{"vm-ABC", "", false},
		{"abc123", "", false},
		{"vm-a/../b", "", false},
		{"vm-a.service", "", false},
	} {
		err := CheckVMID(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("CheckVMID(%q) = %v, want ok %v", tc.id, err, tc.ok)
		}
		if !tc.ok {
			if _, err := unitName(tc.id); err == nil {
				t.Errorf("unitName(%q) accepted it", tc.id)
			}
			continue
		}
		if got := UnitName(tc.id); got != tc.unit {
			t.Errorf("UnitName(%q) = %q, want %q", tc.id, got, tc.unit)
		}
		if id, ok := VMIDOfUnit(tc.unit); !ok || id != tc.id {
			t.Errorf("VMIDOfUnit(%q) = %q, %v; want %q", tc.unit, id, ok, tc.id)
		}
	}
	for _, unit := range []string{"superjoltd.service", "superjolt.slice", "superjolt-vm-abc.service",
		"superjolt-vm-vm-abc.scope", "superjolt-vm-vm-ABC.service", "ssh.service", ""} {
		if id, ok := VMIDOfUnit(unit); ok {
			t.Errorf("VMIDOfUnit(%q) = %q, true; want not a VM unit", unit, id)
		}
	}
}

func TestExitReason(t *testing.T) {
	for _, tc := range []struct {
		st   VMStatus
		want string
	}{
		{VMStatus{Result: "signal", ExecMainCode: CLDKilled, ExecMainStatus: 9}, "killed by signal KILL"},
		{VMStatus{Result: "core-dump", ExecMainCode: CLDDumped, ExecMainStatus: 11}, "killed by signal SEGV (core dumped)"},
		{VMStatus{Result: "exit-code", ExecMainCode: CLDExited, ExecMainStatus: 1}, "exited with status 1"},
		{VMStatus{Result: "success", ExecMainCode: CLDExited, ExecMainStatus: 0}, "exited with status 0"},
		{VMStatus{Result: "oom-kill", ExecMainCode: CLDKilled, ExecMainStatus: 9}, "killed by the kernel's OOM killer (MemoryMax)"},
		{VMStatus{Result: "signal", ExecMainCode: CLDKilled, ExecMainStatus: 64}, "killed by signal 64"},
		{VMStatus{Result: "timeout"}, "did not stop within its stop timeout (or start within its start timeout) and was killed"},
		{VMStatus{Result: "exec-condition"}, "failed: exec-condition"},
		{VMStatus{Result: "success", ActiveState: "active"}, ""},
	} {
		if got := tc.st.ExitReason(); got != tc.want {
			t.Errorf("%+v: ExitReason() = %q, want %q", tc.st, got, tc.want)
		}
	}
}

func TestVMUnitProperties(t *testing.T) {
	u := VMUnit{VMID: "vm-abc", Command: []string{"/usr/bin/qemu"}, MemoryMax: 1 << 30, CPUQuota: 2 * time.Second}
	props, err := u.properties()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]any{}
	for _, p := range props {
		got[p.Name] = p.Value.Value()
	}
	for name, want := range map[string]any{
		"Slice": Slice, "Type": "exec", "Restart": "no", "KillMode": "mixed", "SendSIGKILL": true,
		"MemoryMax": uint64(1 << 30), "CPUQuotaPerSecUSec": uint64(2_000_000), "TimeoutStopUSec": uint64(90_000_000),
		"Description": "superjolt VM vm-abc",
	} {
		if got[name] != want {
			t.Errorf("%s = %#v, want %#v", name, got[name], want)
		}
	}
	for _, name := range []string{"TasksMax", "IOWeight", "ExecStop", "Environment", "After", "CollectMode"} {
		if _, ok := got[name]; ok {
			t.Errorf("%s set, want it left to systemd", name)
		}
	}
	for _, bad := range []VMUnit{
		{VMID: "nope", Command: []string{"/bin/true"}},
		{VMID: "vm-a"},
		{VMID: "vm-a", Command: []string{"qemu"}},
		{VMID: "vm-a", Command: []string{"/bin/true"}, StopCommand: []string{"stop"}},
		{VMID: "vm-a", Command: []string{"/bin/true"}, IOWeight: 10001},
	} {
		if _, err := bad.properties(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
