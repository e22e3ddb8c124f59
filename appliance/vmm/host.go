package vmm

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Host is what the driver found out about the machine it runs on. [ProbeHost] fills it once per process.
type Host struct {
	// KVM is true when /dev/kvm exists and could run a vCPU (see [probeKVM]) and, with a root daemon,
	// QEMU's unprivileged user can open it too; KVMError says why not.
	KVM      bool
	KVMError error
	// KVMGroup is the group QEMU gets as a supplementary group to open /dev/kvm (-1: none needed).
	KVMGroup int
	// VhostVsock is true when /dev/vhost-vsock exists, so guests can get a virtio-vsock device.
	VhostVsock bool
	// TSCKHz is the host's TSC frequency in kHz, 0 when unknown; TSCSource says where it came from.
	TSCKHz    uint64
	TSCSource string
}

var (
	hostOnce sync.Once
	host     Host
)

// ProbeHost probes the host once and returns the cached answer afterwards (with KVM off once a
// KVM boot has failed where TCG then worked, see [markKVMBroken]).
func ProbeHost() Host {
	hostOnce.Do(func() {
		host.KVMGroup = -1
		host.KVMError = probeKVM()
		if host.KVMError == nil && confined() {
			// The probe ran as root; QEMU will not.
			host.KVMGroup, host.KVMError = kvmGroup()
		}
		host.KVM = host.KVMError == nil
		_, err := os.Stat("/dev/vhost-vsock")
		host.VhostVsock = err == nil
		host.TSCKHz, host.TSCSource = tscKHz()
	})
	hostMu.Lock()
	defer hostMu.Unlock()
	h := host
	if kvmBroken != nil {
		h.KVM, h.KVMError = false, kvmBroken
	}
	return h
}

var (
	hostMu    sync.Mutex
	kvmBroken error
)

// markKVMBroken records that a guest failed to boot under KVM and then booted under TCG: the HLT probe
// passed, but this KVM cannot run a real guest (as on some nested hosts). Later machines of this
// process go straight to TCG instead of paying a boot timeout each.
func markKVMBroken(why error) {
	hostMu.Lock()
	defer hostMu.Unlock()
	if kvmBroken == nil {
		kvmBroken = fmt.Errorf("a guest failed to boot under KVM and booted under TCG: %w", why)
	}
}

// tscKHz returns the host TSC frequency in kHz and how it was found.
//
// Under TCG a guest's RDTSC reads the host's counter unchanged, so a guest kernel told
// tsc_early_khz=<host kHz> skips its PIT calibration, which fails under CPU contention on microvm (no
// HPET, no PM timer) and hangs the boot. The sources, in order:
//  1. /sys/devices/system/cpu/cpu0/tsc_freq_khz, which some kernels export: the kernel's own value.
//  2. A measurement: RDTSC against CLOCK_MONOTONIC_RAW over 25 ms, five times, keeping the
//     measurement whose clock reads bracketed the RDTSC most tightly (so a preemption between the two
//     reads does not skew it), then the median of the five. It needs no privileges and no kernel log,
//     and it is what the guest will see: the counter itself. /proc/cpuinfo "cpu MHz" is not used:
//     it is the current core clock, which differs from the TSC rate on hosts with frequency scaling.
//
// It requires an invariant TSC ("constant_tsc" and "nonstop_tsc" in /proc/cpuinfo); without one there is no
// single frequency to give and the answer is 0.
func tscKHz() (uint64, string) {
	if b, err := os.ReadFile("/sys/devices/system/cpu/cpu0/tsc_freq_khz"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && v > 0 {
			return v, "sysfs tsc_freq_khz"
		}
	}
	if !haveRDTSC {
		return 0, "no TSC on this architecture"
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		s := string(b)
		if !strings.Contains(s, " constant_tsc") || !strings.Contains(s, " nonstop_tsc") {
			return 0, "TSC not invariant"
		}
	}
	return measureTSC(25*time.Millisecond, 5), "measured against CLOCK_MONOTONIC_RAW"
}

// measureTSC measures the TSC rate in kHz over n windows of length window and returns the median.
func measureTSC(window time.Duration, n int) uint64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	// sample returns a (ns, tsc) pair whose clock reads were closest together out of a few tries.
	sample := func() (int64, uint64) {
		best := int64(1 << 62)
		var bestNS int64
		var bestTSC uint64
		for i := 0; i < 16; i++ {
			a := monoRaw()
			tsc := rdtsc()
			b := monoRaw()
			if b-a < best {
				best, bestNS, bestTSC = b-a, a+(b-a)/2, tsc
			}
		}
		return bestNS, bestTSC
	}
	var khz []uint64
	for i := 0; i < n; i++ {
		ns0, t0 := sample()
		time.Sleep(window)
		ns1, t1 := sample()
		if ns1 <= ns0 || t1 <= t0 {
			continue
		}
		khz = append(khz, (t1-t0)*1e6/uint64(ns1-ns0))
	}
	if len(khz) == 0 {
		return 0
	}
	slices.Sort(khz)
	return khz[len(khz)/2]
}

func monoRaw() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC_RAW, &ts)
	return ts.Nano()
}

// KVM ioctls (linux/kvm.h).
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmCreateVCPU          = 0xAE41
	kvmRun                 = 0xAE80
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmExitHLT             = 5
)

// probeKVM returns nil when /dev/kvm can really run guest code: it makes a VM with one page of memory at
// the x86 reset vector holding a HLT instruction, runs one vCPU and expects it to exit with KVM_EXIT_HLT.
// Merely opening /dev/kvm is not enough: on nested hosts it can exist and still fail to run a guest.
func probeKVM() error {
	if runtime.GOARCH != "amd64" {
		return fmt.Errorf("KVM probe supports amd64 only")
	}
	kvm, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/kvm: %w", err)
	}
	stuck := false
	defer func() {
		if !stuck {
			unix.Close(kvm)
		}
	}()
	if v, err := ioctl(kvm, kvmGetAPIVersion, 0); err != nil || v != 12 {
		return fmt.Errorf("KVM_GET_API_VERSION = %d, %v; want 12", v, err)
	}
	vm, err := ioctl(kvm, kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	defer func() {
		if !stuck {
			unix.Close(int(vm))
		}
	}()

	const memSize = 0x10000
	mem, err := unix.Mmap(-1, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mmap guest memory: %w", err)
	}
	// A vCPU that never comes back keeps using the memory and fds: leak them rather than pull them away.
	defer func() {
		if !stuck {
			unix.Munmap(mem)
		}
	}()
	mem[0xfff0] = 0xf4 // HLT at 0xfffffff0, where a fresh vCPU starts.
	region := struct {
		Slot, Flags            uint32
		GuestPhysAddr, MemSize uint64
		UserspaceAddr          uint64
	}{0, 0, 0xffff0000, memSize, uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := ioctl(int(vm), kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region))); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}
	vcpu, err := ioctl(int(vm), kvmCreateVCPU, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	defer func() {
		if !stuck {
			unix.Close(int(vcpu))
		}
	}()
	size, err := ioctl(kvm, kvmGetVCPUMmapSize, 0)
	if err != nil || size < 12 {
		return fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE = %d, %v", size, err)
	}
	run, err := unix.Mmap(int(vcpu), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap kvm_run: %w", err)
	}
	defer func() {
		if !stuck {
			unix.Munmap(run)
		}
	}()

	done := make(chan error, 1)
	go func() {
		_, err := ioctl(int(vcpu), kvmRun, 0)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("KVM_RUN: %w", err)
		}
	case <-time.After(2 * time.Second):
		stuck = true
		return errors.New("KVM_RUN did not return within 2s")
	}
	if reason := *(*uint32)(unsafe.Pointer(&run[8])); reason != kvmExitHLT {
		return fmt.Errorf("KVM_RUN exit reason %d, want %d (HLT)", reason, kvmExitHLT)
	}
	return nil
}

func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}
