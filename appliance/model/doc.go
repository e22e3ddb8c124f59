// Package model holds superjolt's objects: accounts, tiers, images, VMs, backups,
// ledger entries, operations and events; their ids and the rules that validate them;
// money as integer micro-credits; and the error categories that the API maps to
// status codes and the CLI to exit codes.
//
// Everything here is plain data and pure functions: no I/O, no clock. Ids that
// become paths on disk (VM and backup ids) are only ever built by NewID and
// accepted from outside after ValidateID.
package model
