// Command mkimage builds the built-in guest image (vmlinuz, initrd, rootfs.img) into a directory with
// package images: the image a new installation's first VM boots from, which tests boot too.
//
// Usage:
//
//	go run ./appliance/images/cmd/mkimage -o DIR [-agent PATH] [-size MiB]
//
// Run it from the superjolt module (it builds cmd/superjolt-agent) unless -agent is given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/superjolt/superjolt/appliance/images"
)

func main() {
	out := flag.String("o", "", "output `dir` (created; must not hold an image already unless -f)")
	agent := flag.String("agent", "", "prebuilt superjolt-agent `binary` (default: build it from this module)")
	sizeMiB := flag.Int64("size", images.DefaultRootfsSize>>20, "rootfs.img size in `MiB` (sparse)")
	force := flag.Bool("f", false, "overwrite an existing image in the output dir")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *out, *agent, *sizeMiB<<20, *force); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		if errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, dir, agent string, size int64, force bool) error {
	if _, err := images.Open(dir); err == nil && !force {
		return fmt.Errorf("%s already holds an image; use -f to overwrite it", dir)
	}
	img, err := images.Build(ctx, dir, images.BuildOptions{
		Agent:      agent,
		RootfsSize: size,
		Logf:       func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	})
	if err != nil {
		return err
	}
	fmt.Printf("%s\n  kernel  %s (%s)\n  initrd  %s\n  rootfs  %s\n", img.Dir, img.Kernel, img.KernelRelease, img.Initrd, img.Rootfs)
	return nil
}
