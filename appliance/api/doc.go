// Package api is superjolt's local API as its clients see it: the wire types
// (the JSON bodies of requests and answers), the error encoding, and [Client],
// the one client package that the CLI, the TUI and tests use to talk to
// superjoltd over its UNIX socket.
//
// The daemon's side, the HTTP handler over the appliance, lives in
// [github.com/superjolt/superjolt/appliance/api/server]; this package does not
// import the appliance, so a front end links none of its storage or VMM code.
//
// # Protocol
//
// HTTP/1.1 and JSON over a UNIX socket ([DefaultSocket], mode 0660). Paths are
// versioned (/v1/...); JSON field names are the snake_case ones of package
// model and of the types here, and stay stable. Money is an integer count of
// micro-credits; durations are strings such as "90s", "24h" or "7d".
//
// The same routes are served over TCP with TLS to account tokens when
// superjoltd runs with --listen: every request then needs "Authorization:
// Bearer <token>" (401 without a valid one, 429 with Retry-After after
// repeated failures from one source), sees its own account only (other
// accounts' objects are 404, as missing ones), and the operator's verbs are
// 403. [NewRemoteClient] is the Client for it, with the server's CA pinned.
//
//	GET    /v1/status                          Status
//	GET    /v1/accounts                        []model.Account
//	POST   /v1/accounts                        CreateAccountRequest -> model.Account
//	GET    /v1/accounts/{id}                   model.Account
//	POST   /v1/accounts/{id}/topup             TopUpRequest -> model.Account
//	POST   /v1/accounts/{id}/adjust            AdjustRequest -> model.Account
//	PUT    /v1/accounts/{id}/ssh-keys          SSHKeysRequest -> model.Account (its default SSH keys, replaced)
//	GET    /v1/accounts/{id}/ledger?limit=N    []model.LedgerEntry
//	POST   /v1/accounts/{id}/tokens            CreateTokenRequest -> CreatedToken (201; the secret, shown once)
//	GET    /v1/accounts/{id}/tokens            []model.Token, newest first (never a secret or a hash)
//	POST   /v1/tokens/{id}/revoke              model.Token (revoking twice answers the first revocation)
//	GET    /v1/tiers                           []model.Tier
//	GET    /v1/images                          []model.Image
//	GET    /v1/pool                            Pool: size, used, free, what uses it
//	GET    /v1/ca                              CA: the local CA's certificate (PEM) that signs the domains' HTTPS certificates
//	GET    /v1/vms?account=ID&state=S&name_prefix=P&image=I  []model.VM, oldest first (paged: see below)
//	POST   /v1/vms                             CreateVMRequest -> model.VM
//	GET    /v1/vms/usage                       []model.VMUsage: memory and CPU of each running VM's process
//	GET    /v1/vms/{id}                        model.VM
//	POST   /v1/vms/{id}/stop|start|resume      model.VM
//	POST   /v1/vms/{id}/halt                   model.VM (the host stops it: see superjoltd stop-vm)
//	POST   /v1/vms/{id}/destroy                DestroyResult
//	POST   /v1/vms/{id}/exec                   ExecRequest -> ExecResult
//	POST   /v1/vms/{id}/exec/stream            NDJSON ExecRequest, ExecInput... -> NDJSON ExecFrame...
//	POST   /v1/vms/{id}/console                raw bytes typed -> raw bytes of the serial console (full duplex)
//	GET    /v1/vms/{id}/console/log?lines=N    ConsoleLog: the console log's last N lines (50), as text
//	GET    /v1/vms/{id}/logs?lines=N&follow=B  text: the VM's log (its unit's journal, or QEMU's and the console's), streamed
//	POST   /v1/vms/{id}/ports                  model.Port -> model.VM
//	DELETE /v1/vms/{id}/ports/{proto}/{number} model.VM
//	POST   /v1/vms/{id}/domains                DomainRequest -> model.VM
//	DELETE /v1/vms/{id}/domains/{domain}       model.VM
//	GET    /v1/vms/{id}/backups                []model.Backup, newest first
//	POST   /v1/vms/{id}/backups                model.Backup (on demand)
//	GET    /v1/vms/{id}/backups/resolve?from=F model.Backup (F: latest, yesterday, YYYY-MM-DD)
//	POST   /v1/vms/{id}/restore                RestoreRequest -> model.VM
//	GET    /v1/backups?account=ID&vm=ID&kind=K []model.Backup of every stored VM, by VM id, newest first (paged)
//	DELETE /v1/backups/{id}                    204
//	GET    /v1/operations/{id}                 model.Operation
//	GET    /v1/events?after=N&limit=M          []model.Event
//	GET    /v1/events?tail=N                   []model.Event: the newest N, oldest first
//	GET    /v1/events?after=N&follow=1         model.Event per line (NDJSON), until the client leaves
//	POST   /v1/debug/clock/advance             AdvanceClockRequest -> ClockResult
//
// The two lists of many objects, GET /v1/vms and GET /v1/backups, filter in
// the daemon and come whole by default. With limit=N (1 to [MaxPageLimit])
// they come a page at a time: the answer is the same JSON list, at most N
// long, and when more follow its [NextCursorHeader] holds the cursor to
// pass as cursor=C (with the same filters) for the next page; [CountHeader]
// says how many items the answer holds. A cursor names the place of a
// page's last item in the list's order, so pages never repeat an item nor
// skip one that existed throughout, however VMs come and go between them;
// one that no list gave out is a 400. [Client.VMsByPage] and
// [Client.BackupsByPage] follow every page.
//
// Every operation's life is on the event stream, each event's Object its
// id: op.started when it is recorded, op.step for each step (its message
// "restore of vm-abc123: stopped (20%)"), then op.done, op.failed,
// op.cancelled, or op.recovered when a restart finished it. A front end
// that shows operations live refetches one on any op.* event naming it.
//
// # Errors
//
// A failed request is answered with the status of its category and
//
//	{"error":{"code":"not_found","message":"vm-abc123 does not exist; `superjolt vm list` shows the VMs"}}
//
// where code is [model.Code] of the error: not_found 404, invalid 400,
// conflict 409, insufficient_funds 402, unavailable 503, no_space 507,
// unauthenticated 401, forbidden 403, internal 500.
// [Client] turns such an answer back into an [*Error] that wraps the model
// category, so errors.Is(err, model.ErrNotFound) works on both sides of the
// socket. A daemon that cannot be reached is model.ErrUnavailable too.
package api
