package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakePorts makes a /sys/class/virtio-ports lookalike: name -> port dir
// vportNp1 with its name and dev files.
func fakePorts(t testing.TB, names ...string) (sysDir, devDir string) {
	t.Helper()
	root := t.TempDir()
	sysDir, devDir = filepath.Join(root, "sys"), filepath.Join(root, "dev")
	for _, d := range []string{sysDir, devDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, name := range names {
		port := filepath.Join(sysDir, fmt.Sprintf("vport%dp%d", i/4, i%4+1))
		if err := os.Mkdir(port, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(port, "name"), []byte(name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// 1:3 is /dev/null's number: harmless if opened.
		if err := os.WriteFile(filepath.Join(port, "dev"), []byte("1:3\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return sysDir, devDir
}

func TestFindSerialPort(t *testing.T) {
	t.Run("node exists", func(t *testing.T) {
		sysDir, devDir := fakePorts(t, "org.qemu.guest_agent.0", SerialPortName)
		want := filepath.Join(devDir, "vport0p2")
		if err := os.WriteFile(want, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := findSerialPort(sysDir, devDir, SerialPortName)
		if err != nil || got != want {
			t.Fatalf("findSerialPort = %q, %v; want %q", got, err, want)
		}
	})
	t.Run("no such name", func(t *testing.T) {
		sysDir, devDir := fakePorts(t, "other")
		if _, err := findSerialPort(sysDir, devDir, SerialPortName); !errors.Is(err, errNoSerialPort) {
			t.Fatalf("err = %v, want errNoSerialPort", err)
		}
	})
	t.Run("no virtio-ports", func(t *testing.T) {
		if _, err := findSerialPort(filepath.Join(t.TempDir(), "none"), t.TempDir(), SerialPortName); !errors.Is(err, errNoSerialPort) {
			t.Fatalf("err = %v, want errNoSerialPort", err)
		}
	})
	t.Run("mknod when devtmpfs lacks the node", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root for mknod")
		}
		sysDir, devDir := fakePorts(t, SerialPortName)
		got, err := findSerialPort(sysDir, devDir, SerialPortName)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(got, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
			t.Fatalf("%s is mode %o rdev %d:%d, want a char device 1:3", got, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
	})
}

// openPty returns a pty master and the path of its slave, in raw mode.
func openPty(t testing.TB) (*os.File, string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("needs /dev/ptmx for a stand-in serial port: %v", err)
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	// cfmakeraw, applied through the master to the slave.
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	return master, fmt.Sprintf("/dev/pts/%d", n)
}

// TestServeSerial serves a stand-in port (a pty behind the port's device
// name) found by name, loses the host, and serves the next one.
func TestServeSerial(t *testing.T) {
	sysDir, devDir := fakePorts(t, SerialPortName)
	node := filepath.Join(devDir, "vport0p1")
	ta := newTestAgent(t, nil)
	ta.portsDir, ta.devDir, ta.portRetry = sysDir, devDir, 20*time.Millisecond

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ta.ServeSerial(ctx, SerialPortName) }()
	defer func() {
		cancel()
		within(t, 5*time.Second, "ServeSerial after cancel", func() {
			if err := <-done; err != nil {
				t.Errorf("ServeSerial: %v", err)
			}
		})
	}()

	for session := range 2 {
		master, slave := openPty(t)
		// Swap the node atomically: while it is missing the agent would
		// mknod it itself.
		tmp := node + ".new"
		if err := os.Symlink(slave, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, node); err != nil {
			t.Fatal(err)
		}
		_ = master.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(master)
		// The line waits in the pty until the agent (re)opens the port.
		id := uint64(100 * (session + 1))
		if _, err := fmt.Fprintf(master, `{"v":1,"id":%d,"op":"ping"}`+"\n", id); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadBytes('\n')
		if err != nil {
			t.Fatalf("session %d: no answer on the serial port: %v", session, err)
		}
		var resp Response
		if err := json.Unmarshal(line, &resp); err != nil || !resp.OK || resp.ID != id || resp.BootID != ta.bootID {
			t.Fatalf("session %d: answer %q (%v)", session, line, err)
		}
		master.Close() // the host goes away
	}
}
