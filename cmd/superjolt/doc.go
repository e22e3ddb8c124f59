// Command superjolt is the operator CLI of a superjolt appliance. It talks to
// superjoltd over the local API socket (see package appliance/api); every
// command is a thin layer that parses flags, calls the api client and prints
// a table or, with -o json, the API's JSON.
//
// Exit codes:
//
//	0    success
//	1    internal error (a bug, or the daemon failed unexpectedly)
//	2    invalid input or usage: bad id, amount, flag or argument; a
//	     destructive command without --yes when stdin is not a terminal
//	3    not found: no such account, VM, backup or operation
//	4    conflict: the object's state forbids it now (double destroy, restore
//	     while another operation runs, clock advance on a real clock)
//	5    insufficient funds
//	6    unavailable: superjoltd (or a guest agent) cannot be reached
//	7    no space: the storage pool is full (the message names it and says
//	     how much is free; `superjolt pool` shows what uses it)
//	130  cancelled (SIGINT or SIGTERM, or a confirmation not answered yes)
//
// `superjolt vm exec` exits with the guest command's own status instead when
// the command ran (128+N when signal N ended it).
package main
