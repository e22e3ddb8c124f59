// Package qmp is a small client for the QEMU Machine Protocol (QMP), the JSON control channel of a QEMU
// process, spoken over a UNIX socket (`-qmp unix:PATH,server=on,wait=off`).
//
// [Dial] connects, reads the greeting and negotiates capabilities (`qmp_capabilities`), after which
// [Conn.Execute] runs commands concurrently: each carries its own id and gets its own answer. Asynchronous
// events (SHUTDOWN, RESET, STOP, VSERPORT_CHANGE, ...) are delivered on [Conn.Events].
//
// It was written for this project instead of using github.com/digitalocean/go-qemu/qmp: that package
// serialises commands under one lock without ids (a slow command blocks every other one), pulls in the
// libvirt transport and a generated API of several hundred types, and its event stream is a single
// channel that can be consumed only once; what the VMM driver needs fits in a few hundred lines that are
// tested against a real QEMU.
//
// A [Conn] is safe for concurrent use.
package qmp
