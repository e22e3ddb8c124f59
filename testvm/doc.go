// Package testvm makes a real guest for end-to-end tests, and is the source of the built-in image a
// new installation's first VM boots from.
//
// [Build] writes an image into a directory from Debian packages only: the cloud kernel
// (linux-image-cloud-amd64's dependency, fetched with apt-get download and read with dpkg-deb), an
// initramfs whose /init is the superjolt agent (which loads the virtio and vsock modules listed in
// /lib/modules/superjolt/order, mounts /dev/vda and switches to it), and rootfs.img, an ext4 file
// system made with mkfs.ext4 -d (nothing is mounted) holding busybox-static and the agent.
// [Cached] keeps built images under [CacheDir], keyed by the agent's bytes, the kernel package and
// busybox, so a changed agent makes a new image and an unchanged one costs nothing.
//
// [Boot] boots the image through the project's own QEMU driver (appliance/vmm) for a test, waits for the
// agent and hands back the VM with a connected guest client; the test's cleanup shuts it down. Tests
// that cannot boot skip with a message naming what is missing.
package testvm
