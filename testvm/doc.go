// Package testvm boots real guests for end-to-end tests.
//
// [Require] skips a test when the host lacks what a guest needs, and otherwise returns the built-in
// image from package images (built once into its cache). [Boot] boots that image through the
// project's own QEMU driver (appliance/vmm) for a test, waits for the agent and hands back the VM with
// a connected guest client; the test's cleanup shuts it down. Tests that cannot boot skip with a
// message naming what is missing.
package testvm
