package guest_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/superjolt/superjolt/guest"
)

// A backup of a running VM: freeze the guest's filesystems, snapshot,
// thaw. The agent thaws by itself after the deadline if the host never
// gets to it.
func ExampleClient_Freeze() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := guest.DialSerial(ctx, "/run/superjolt/vm-abc123/agent.sock")
	if err != nil {
		log.Fatal(err)
	}
	c := guest.NewClient(conn, guest.WithTimeout(5*time.Second))
	defer c.Close()

	fr, err := c.Freeze(ctx, time.Minute)
	if err != nil {
		log.Printf("no freeze, the backup will be crash-consistent: %v", err)
	} else {
		defer c.Thaw(ctx)
	}
	fmt.Println("frozen:", fr.Filesystems)
	// ... take the read-only btrfs snapshot here ...
}

// Running a command in the guest.
func ExampleClient_Exec() {
	ctx := context.Background()
	conn, err := guest.DialVsock(ctx, 3, guest.VsockPort)
	if err != nil {
		log.Fatal(err)
	}
	c := guest.NewClient(conn)
	defer c.Close()
	res, err := c.Exec(ctx, guest.ExecRequest{Path: "uname", Args: []string{"-r"}, Timeout: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("exit %d: %s", res.ExitCode, res.Stdout)
}
