// Package net puts superjolt's VMs on a network, following the "Networking" section of DESIGN.md:
// one bridge holding the gateway address of the VM subnet (EnsureBridge), one TAP per VM on that bridge
// with a MAC derived from the VM id (TAPName, MAC, OpenTAP, RemoveTAP), and one nftables table of
// superjolt's own, replaced atomically from a Ruleset (Firewall.Apply): egress masquerade, port forwards
// as DNAT (from outside, from the host itself and hairpin), and isolation between accounts.
//
// Everything acts in the network namespace of the calling thread (or, for the Firewall, of its
// nftables connection): the host's namespace in production, a namespace made by the test in tests.
// The package talks netlink directly (github.com/vishvananda/netlink, github.com/google/nftables) and
// never runs ip or nft.
//
// The package's name shadows the standard library's; importers usually name it sjnet.
package net
