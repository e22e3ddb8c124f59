// Package images builds the built-in guest image that superjoltd seeds into its pool, and that tests
// boot (package testvm).
//
// [Build] writes an image into a directory from Debian packages only: the cloud kernel
// (linux-image-cloud-amd64's dependency, fetched with apt-get download and read with dpkg-deb), an
// initramfs whose /init is the superjolt agent (which loads the virtio and vsock modules listed in
// /lib/modules/superjolt/order, mounts /dev/vda and switches to it), and rootfs.img, an ext4 file
// system made with mkfs.ext4 -d (nothing is mounted) holding busybox-static and the agent.
// [Cached] keeps built images under [CacheDir], keyed by the agent's bytes, the kernel package and
// busybox, so a changed agent makes a new image and an unchanged one costs nothing. The agent must be
// static: a build handed a dynamically linked one fails at once, saying how to build it.
//
// [Missing] names the host tools a build (and a boot) needs that are not installed. [CopyDisk] copies
// a disk image sparsely, or as a reflink where the filesystem can share extents. The initramfs is
// written with package cpio, below this one.
package images
