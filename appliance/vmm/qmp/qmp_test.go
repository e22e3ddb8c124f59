package qmp_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/vmm/qmp"
)

// startQEMU starts a paused QEMU (no guest code runs) with a QMP socket and returns a connection to it.
func startQEMU(t testing.TB) *qmp.Conn {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	if _, err := os.Stat("/usr/share/qemu/qboot.rom"); err != nil {
		t.Skip("/usr/share/qemu/qboot.rom missing (apt-get install qemu-system-data)")
	}
	dir, err := os.MkdirTemp("", "qmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "q.sock")
	cmd := exec.Command(bin, "-M", "microvm", "-accel", "tcg", "-m", "32", "-nodefaults", "-no-user-config",
		"-display", "none", "-S", "-qmp", "unix:"+sock+",server=on,wait=off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		c, err := qmp.Dial(ctx, sock)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		select {
		case <-exited:
			t.Fatalf("qemu exited before its QMP socket answered: %v", err)
		case <-ctx.Done():
			t.Fatalf("qmp dial: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func status(t *testing.T, c *qmp.Conn) (string, bool) {
	t.Helper()
	ret, err := c.Execute(context.Background(), "query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := json.Unmarshal(ret, &st); err != nil {
		t.Fatal(err)
	}
	return st.Status, st.Running
}

func waitEvent(t *testing.T, c *qmp.Conn, name string) qmp.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("event stream ended while waiting for %s", name)
			}
			if ev.Name == name {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event", name)
		}
	}
}

func TestHandshakeAndCommands(t *testing.T) {
	c := startQEMU(t)
	if v := c.Version(); v.Major < 6 {
		t.Errorf("version %v: want QEMU >= 6 (set-action)", v)
	}
	if st, running := status(t, c); st != "prelaunch" || running {
		t.Errorf("status = %q running=%v, want prelaunch, not running", st, running)
	}

	_, err := c.Execute(context.Background(), "no-such-command", nil)
	var qe *qmp.Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command: err = %v, want a CommandNotFound *qmp.Error", err)
	}

	// Arguments are passed through.
	if _, err := c.Execute(context.Background(), "set-action", map[string]string{"reboot": "reset"}); err != nil {
		t.Errorf("set-action: %v", err)
	}
	_, err = c.Execute(context.Background(), "set-action", map[string]string{"reboot": "bogus"})
	if !errors.As(err, &qe) || qe.Class != "GenericError" {
		t.Errorf("bad argument: err = %v, want GenericError", err)
	}

	// cont and stop emit RESUME and STOP.
	if _, err := c.Execute(context.Background(), "cont", nil); err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, c, "RESUME"); ev.Time.IsZero() {
		t.Error("event without timestamp")
	}
	if _, err := c.Execute(context.Background(), "stop", nil); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, c, "STOP")
	if st, running := status(t, c); st != "paused" || running {
		t.Errorf("status = %q running=%v, want paused", st, running)
	}
}

func TestConcurrentExecute(t *testing.T) {
	c := startQEMU(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cmd := "query-status"
			if i%2 == 1 {
				cmd = "query-name"
			}
			ret, err := c.Execute(context.Background(), cmd, nil)
			if err != nil {
				errs <- err
				return
			}
			var m map[string]any
			if err := json.Unmarshal(ret, &m); err != nil {
				errs <- err
				return
			}
			// Each answer must be the one for this command, not a neighbour's.
			if _, ok := m["status"]; ok != (cmd == "query-status") {
				errs <- errors.New(cmd + " got the wrong answer: " + string(ret))
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestQuitEndsConnection(t *testing.T) {
	c := startQEMU(t)
	if _, err := c.Execute(context.Background(), "quit", nil); err != nil && !errors.Is(err, qmp.ErrClosed) {
		t.Fatal(err)
	}
	waitEvent(t, c, "SHUTDOWN")
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection did not end after quit")
	}
	if _, err := c.Execute(context.Background(), "query-status", nil); !errors.Is(err, qmp.ErrClosed) {
		t.Errorf("after quit: err = %v, want ErrClosed", err)
	}
}

func TestExecuteHonoursContext(t *testing.T) {
	// A peer that greets and negotiates but then never answers.
	server, client := net.Pipe()
	go func() {
		server.Write([]byte(`{"QMP":{"version":{"qemu":{"major":7,"minor":2,"micro":0},"package":""},"capabilities":[]}}` + "\n"))
		buf := make([]byte, 4096)
		server.Read(buf)
		server.Write([]byte(`{"return":{},"id":"caps"}` + "\n"))
		for {
			if _, err := server.Read(buf); err != nil {
				return
			}
		}
	}()
	c, err := qmp.NewConn(context.Background(), client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Execute(ctx, "query-status", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Execute returned after %v, want about 200ms", d)
	}
}

func TestDialRejectsNonQMP(t *testing.T) {
	server, client := net.Pipe()
	go func() {
		server.Write([]byte(`{"hello":"world"}` + "\n"))
		server.Close()
	}()
	if _, err := qmp.NewConn(context.Background(), client); err == nil {
		t.Error("NewConn accepted a peer that is not QMP")
	}
}
