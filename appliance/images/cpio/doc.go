// Package cpio writes cpio archives in the "newc" (SVR4, no CRC) format, the one the Linux kernel
// unpacks as an initramfs.
//
// It holds only what an initramfs needs: directories, regular files and symbolic links, all owned by
// root, with a zero modification time so that the same input makes the same bytes. Written here rather
// than taken from a library (u-root's cpio package is the well-kept one) because the format is a fixed
// 110-byte header plus padding, and a dependency for that would pull in u-root's module graph.
package cpio
