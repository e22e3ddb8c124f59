package guest

import (
	"context"
	"log/slog"
	"os"
	"syscall"
	"time"
)

// ConsoleShell is what the built-in guest runs on its serial console: a root
// shell, with no login. The serial console is reached only through the
// daemon (superjolt vm console), by whoever may use the daemon's socket, who
// can already run anything in the guest with vm exec; a login would add a
// password to keep without keeping anyone out.
var ConsoleShell = []string{"/bin/sh", "-l"}

// RunConsoleShell runs ConsoleShell on tty (e.g. /dev/ttyS0) and starts it
// again whenever it exits, until ctx ends. The shell gets a session of its
// own with tty as its controlling terminal (setsid, then TIOCSCTTY in the
// child), so that it never becomes the caller's (PID 1's) controlling
// terminal and a hangup or Ctrl-C on it reaches the shell alone. r reaps
// the shell when PID 1 reaps every child (nil: plain os.Process.Wait).
func RunConsoleShell(ctx context.Context, log *slog.Logger, r *Reaper, tty string) {
	if _, err := os.Stat(ConsoleShell[0]); err != nil {
		log.Info("no shell on the serial console", "err", err)
		return
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		began := time.Now()
		if err := runConsoleShellOnce(ctx, r, tty); err != nil {
			log.Warn("serial console shell", "tty", tty, "err", err)
		}
		// A shell that exited after a while (exit, Ctrl-D) gets a new prompt
		// at once; one that dies at once (no tty, say) is not restarted in a
		// tight loop.
		if time.Since(began) > 2*time.Second {
			backoff = 100 * time.Millisecond
		} else if backoff *= 2; backoff > 30*time.Second {
			backoff = 30 * time.Second
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
}

func runConsoleShellOnce(ctx context.Context, r *Reaper, tty string) error {
	f, err := os.OpenFile(tty, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	attr := &os.ProcAttr{
		Dir:   "/root",
		Env:   append(append([]string(nil), InitEnv...), "SHELL=/bin/sh", "USER=root", "LOGNAME=root"),
		Files: []*os.File{f, f, f},
		// Ctty is a descriptor number in the child: 0, the tty.
		Sys: &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0},
	}
	if _, err := os.Stat(attr.Dir); err != nil {
		attr.Dir = "/"
	}
	if r != nil {
		p, done, err := r.StartProcess(ConsoleShell[0], ConsoleShell, attr)
		if err != nil {
			return err
		}
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			_ = p.Kill()
			<-done
			return nil
		}
	}
	p, err := os.StartProcess(ConsoleShell[0], ConsoleShell, attr)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = p.Kill() })
	defer stop()
	_, err = p.Wait()
	return err
}
