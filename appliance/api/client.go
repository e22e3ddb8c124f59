package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	fastjson "github.com/segmentio/encoding/json"

	"github.com/superjolt/superjolt/appliance/model"
)

// Client talks to superjoltd over its UNIX socket. Its methods have the
// appliance's names and return errors that wrap the model categories
// (errors.Is(err, model.ErrNotFound)); a daemon that cannot be reached is
// model.ErrUnavailable with a message saying how to start it. A Client is
// safe for concurrent use.
type Client struct {
	socket string
	hc     *http.Client
	// base is the URL requests go to: "http://superjoltd" over the
	// socket, the server's https://host:port remotely.
	base string
	// token, when set, is sent as a bearer token (remote clients).
	token string
}

// NewClient returns a client for the daemon listening on socketPath
// ("" means DefaultSocket). It does not connect until the first call.
func NewClient(socketPath string) *Client {
	if socketPath == "" {
		socketPath = DefaultSocket
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: socketPath, hc: &http.Client{Transport: tr}, base: "http://superjoltd"}
}

// Socket returns the socket path the client dials.
func (c *Client) Socket() string { return c.socket }

// Close drops the client's idle connections.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

// Status returns the daemon's clock and its kind.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, nil, &s)
}

// CreateAccount opens an account.
func (c *Client) CreateAccount(ctx context.Context, req CreateAccountRequest) (model.Account, error) {
	var a model.Account
	return a, c.do(ctx, http.MethodPost, "/v1/accounts", nil, req, &a)
}

// Accounts lists the accounts.
func (c *Client) Accounts(ctx context.Context) ([]model.Account, error) {
	var as []model.Account
	return as, c.do(ctx, http.MethodGet, "/v1/accounts", nil, nil, &as)
}

// Account returns one account.
func (c *Client) Account(ctx context.Context, id string) (model.Account, error) {
	var a model.Account
	return a, c.do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(id), nil, nil, &a)
}

// TopUp adds amount micro-credits to an account's balance.
func (c *Client) TopUp(ctx context.Context, id string, amount model.Micro) (model.Account, error) {
	var a model.Account
	return a, c.do(ctx, http.MethodPost, "/v1/accounts/"+url.PathEscape(id)+"/topup", nil, TopUpRequest{Amount: amount}, &a)
}

// Adjust corrects an account's balance by amount micro-credits (negative
// takes back) with the operator's reason, as a ledger entry of its own.
func (c *Client) Adjust(ctx context.Context, id string, amount model.Micro, reason string) (model.Account, error) {
	var a model.Account
	return a, c.do(ctx, http.MethodPost, "/v1/accounts/"+url.PathEscape(id)+"/adjust", nil, AdjustRequest{Amount: amount, Reason: reason}, &a)
}

// SetSSHKeys replaces an account's default SSH keys (OpenSSH public keys,
// one an element); none clears them.
func (c *Client) SetSSHKeys(ctx context.Context, id string, keys []string) (model.Account, error) {
	var a model.Account
	if keys == nil {
		keys = []string{}
	}
	return a, c.do(ctx, http.MethodPut, "/v1/accounts/"+url.PathEscape(id)+"/ssh-keys", nil, SSHKeysRequest{SSHKeys: keys}, &a)
}

// CreateToken makes a token for an account; the answer holds its secret,
// which is never shown again.
func (c *Client) CreateToken(ctx context.Context, accountID string, req CreateTokenRequest) (CreatedToken, error) {
	var ct CreatedToken
	return ct, c.do(ctx, http.MethodPost, "/v1/accounts/"+url.PathEscape(accountID)+"/tokens", nil, req, &ct)
}

// Tokens lists an account's tokens, revoked and expired ones included,
// newest first.
func (c *Client) Tokens(ctx context.Context, accountID string) ([]model.Token, error) {
	var ts []model.Token
	return ts, c.do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(accountID)+"/tokens", nil, nil, &ts)
}

// RevokeToken revokes a token; revoking a revoked one answers it as it is.
func (c *Client) RevokeToken(ctx context.Context, id string) (model.Token, error) {
	var t model.Token
	return t, c.do(ctx, http.MethodPost, "/v1/tokens/"+url.PathEscape(id)+"/revoke", nil, nil, &t)
}

// LedgerTotals adds up an account's whole ledger.
func (c *Client) LedgerTotals(ctx context.Context, accountID string) (model.LedgerTotals, error) {
	var t model.LedgerTotals
	return t, c.do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(accountID)+"/ledger/totals", nil, nil, &t)
}

// Ledger returns the newest limit ledger entries of an account (0: the
// daemon's default).
func (c *Client) Ledger(ctx context.Context, accountID string, limit int) ([]model.LedgerEntry, error) {
	var es []model.LedgerEntry
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return es, c.do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(accountID)+"/ledger", q, nil, &es)
}

// Tiers lists the tiers.
func (c *Client) Tiers(ctx context.Context) ([]model.Tier, error) {
	var ts []model.Tier
	return ts, c.do(ctx, http.MethodGet, "/v1/tiers", nil, nil, &ts)
}

// Images lists the images.
func (c *Client) Images(ctx context.Context) ([]model.Image, error) {
	var is []model.Image
	return is, c.do(ctx, http.MethodGet, "/v1/images", nil, nil, &is)
}

// CreateVM asks for a VM to be made and booted, and returns the operation
// that does it (its VMID is the new VM's id); FollowOperation waits for it.
func (c *Client) CreateVM(ctx context.Context, req CreateVMRequest) (model.Operation, error) {
	return c.submit(ctx, http.MethodPost, "/v1/vms", req)
}

// VMs lists the VMs that match f, oldest first, in one answer.
func (c *Client) VMs(ctx context.Context, f VMFilter) ([]model.VM, error) {
	vms, _, err := c.VMPage(ctx, f, Page{})
	return vms, err
}

// VMPage returns a page of the VMs that match f, oldest first, and the
// cursor of the next page ("" after the last one).
func (c *Client) VMPage(ctx context.Context, f VMFilter, p Page) ([]model.VM, string, error) {
	q := p.query()
	if f.AccountID != "" {
		q.Set("account", f.AccountID)
	}
	if f.State != "" {
		q.Set("state", string(f.State))
	}
	if f.NamePrefix != "" {
		q.Set("name_prefix", f.NamePrefix)
	}
	if f.Image != "" {
		q.Set("image", f.Image)
	}
	return doList[model.VM](ctx, c, "/v1/vms", q)
}

// VMsByPage lists the VMs that match f, oldest first, by following pages
// of limit VMs from the start to the end.
func (c *Client) VMsByPage(ctx context.Context, f VMFilter, limit int) ([]model.VM, error) {
	return allPages(limit, func(p Page) ([]model.VM, string, error) { return c.VMPage(ctx, f, p) })
}

// allPages follows the pages of a list until the last.
func allPages[T any](limit int, page func(Page) ([]T, string, error)) ([]T, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: a page limit must be 1 to %d", model.ErrInvalid, MaxPageLimit)
	}
	var all []T
	p := Page{Limit: limit}
	for {
		items, next, err := page(p)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if next == "" {
			return all, nil
		}
		p.Cursor = next
	}
}

// query returns the page's query parameters.
func (p Page) query() url.Values {
	q := url.Values{}
	if p.Limit != 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Cursor != "" {
		q.Set("cursor", p.Cursor)
	}
	return q
}

// VMUsage returns the memory and CPU use of every VM whose process runs,
// ordered by VM id. CPU is measured since the daemon's previous sample of
// the same process, whoever asked for it: poll at a steady interval
// (a second or more) for steady figures.
func (c *Client) VMUsage(ctx context.Context) ([]model.VMUsage, error) {
	var us []model.VMUsage
	return us, c.do(ctx, http.MethodGet, "/v1/vms/usage", nil, nil, &us)
}

// VM returns one VM.
func (c *Client) VM(ctx context.Context, id string) (model.VM, error) {
	var vm model.VM
	return vm, c.do(ctx, http.MethodGet, vmPath(id, ""), nil, nil, &vm)
}

// StopVM asks for a VM to be shut down (it keeps billing, its IP, ports and
// domains) and returns the operation.
func (c *Client) StopVM(ctx context.Context, id string) (model.Operation, error) {
	return c.submit(ctx, http.MethodPost, vmPath(id, "/stop"), nil)
}

// HaltVM asks for a running VM's guest to be shut down because the host
// stops it (its unit's stop command); the VM boots again with the daemon.
func (c *Client) HaltVM(ctx context.Context, id string) (model.VM, error) {
	var vm model.VM
	return vm, c.do(ctx, http.MethodPost, vmPath(id, "/halt"), nil, nil, &vm)
}

// StartVM asks for a stopped VM to be booted and returns the operation.
func (c *Client) StartVM(ctx context.Context, id string) (model.Operation, error) {
	return c.submit(ctx, http.MethodPost, vmPath(id, "/start"), nil)
}

// ResumeVM asks for a VM to come back from the graveyard or from archived,
// and returns the operation.
func (c *Client) ResumeVM(ctx context.Context, id string) (model.Operation, error) {
	return c.submit(ctx, http.MethodPost, vmPath(id, "/resume"), nil)
}

// DestroyVM asks for a VM to go to the graveyard, or to be reclaimed at once
// when it is younger than an hour, and returns the operation.
func (c *Client) DestroyVM(ctx context.Context, id string) (model.Operation, error) {
	return c.submit(ctx, http.MethodPost, vmPath(id, "/destroy"), nil)
}

// Exec runs a program in the guest and returns how it ended. A program that
// exits non-zero is not an error.
func (c *Client) Exec(ctx context.Context, id string, req ExecRequest) (ExecResult, error) {
	var r ExecResult
	return r, c.do(ctx, http.MethodPost, vmPath(id, "/exec"), nil, req, &r)
}

// AddPort opens a port of a VM.
func (c *Client) AddPort(ctx context.Context, id string, p model.Port) (model.VM, error) {
	var vm model.VM
	return vm, c.do(ctx, http.MethodPost, vmPath(id, "/ports"), nil, p, &vm)
}

// RemovePort closes a port of a VM.
func (c *Client) RemovePort(ctx context.Context, id string, p model.Port) (model.VM, error) {
	var vm model.VM
	path := vmPath(id, "/ports/"+url.PathEscape(p.Proto)+"/"+strconv.Itoa(int(p.Number)))
	return vm, c.do(ctx, http.MethodDelete, path, nil, nil, &vm)
}

// AddDomain attaches a domain to a VM.
func (c *Client) AddDomain(ctx context.Context, id, domain string, port uint16) (model.VM, error) {
	var vm model.VM
	return vm, c.do(ctx, http.MethodPost, vmPath(id, "/domains"), nil, DomainRequest{Domain: domain, Port: port}, &vm)
}

// RemoveDomain detaches a domain from a VM.
func (c *Client) RemoveDomain(ctx context.Context, id, domain string) (model.VM, error) {
	var vm model.VM
	return vm, c.do(ctx, http.MethodDelete, vmPath(id, "/domains/"+url.PathEscape(domain)), nil, nil, &vm)
}

// CreateBackup asks for an on-demand backup of a VM and returns the
// operation (its BackupID is the new backup's id).
func (c *Client) CreateBackup(ctx context.Context, vmID string) (model.Operation, error) {
	return c.submit(ctx, http.MethodPost, vmPath(vmID, "/backups"), nil)
}

// Backup returns one backup.
func (c *Client) Backup(ctx context.Context, id string) (model.Backup, error) {
	var b model.Backup
	return b, c.do(ctx, http.MethodGet, "/v1/backups/"+url.PathEscape(id), nil, nil, &b)
}

// Backups lists a VM's backups, newest first.
func (c *Client) Backups(ctx context.Context, vmID string) ([]model.Backup, error) {
	var bs []model.Backup
	return bs, c.do(ctx, http.MethodGet, vmPath(vmID, "/backups"), nil, nil, &bs)
}

// ListBackups returns the backups of every stored VM (live, in the
// graveyard or archived) that f selects, ordered by VM id, then newest
// first, in one answer. SizeBytes is as recorded when each was taken.
func (c *Client) ListBackups(ctx context.Context, f BackupFilter) ([]model.Backup, error) {
	bs, _, err := c.BackupPage(ctx, f, Page{})
	return bs, err
}

// BackupPage returns a page of ListBackups' list and the cursor of the
// next page ("" after the last one).
func (c *Client) BackupPage(ctx context.Context, f BackupFilter, p Page) ([]model.Backup, string, error) {
	q := p.query()
	if f.AccountID != "" {
		q.Set("account", f.AccountID)
	}
	if f.VMID != "" {
		q.Set("vm", f.VMID)
	}
	if f.Kind != "" {
		q.Set("kind", string(f.Kind))
	}
	return doList[model.Backup](ctx, c, "/v1/backups", q)
}

// BackupsByPage lists what ListBackups does by following pages of limit
// backups from the start to the end.
func (c *Client) BackupsByPage(ctx context.Context, f BackupFilter, limit int) ([]model.Backup, error) {
	return allPages(limit, func(p Page) ([]model.Backup, string, error) { return c.BackupPage(ctx, f, p) })
}

// DeleteBackup asks for an on-demand backup to be deleted and returns the
// operation.
func (c *Client) DeleteBackup(ctx context.Context, backupID string) (model.Operation, error) {
	return c.submit(ctx, http.MethodDelete, "/v1/backups/"+url.PathEscape(backupID), nil)
}

// ResolveBackup returns the backup of a VM that from names: "latest",
// "yesterday", a date YYYY-MM-DD (calendar days in the IANA zone tz; ""
// is UTC) or a backup id.
func (c *Client) ResolveBackup(ctx context.Context, vmID, from, tz string) (model.Backup, error) {
	var b model.Backup
	q := url.Values{"from": {from}}
	if tz != "" {
		q.Set("tz", tz)
	}
	return b, c.do(ctx, http.MethodGet, vmPath(vmID, "/backups/resolve"), q, nil, &b)
}

// RestoreVM asks for a VM's disk to be rewound to a backup (and the VM
// booted again if it ran) and returns the operation.
func (c *Client) RestoreVM(ctx context.Context, vmID, backupID string) (model.Operation, error) {
	return c.submit(ctx, http.MethodPost, vmPath(vmID, "/restore"), RestoreRequest{BackupID: backupID})
}

// submit sends a request that starts an operation and returns it.
func (c *Client) submit(ctx context.Context, method, path string, in any) (model.Operation, error) {
	var op model.Operation
	return op, c.do(ctx, method, path, nil, in, &op)
}

// Operation returns a long operation and its progress.
func (c *Client) Operation(ctx context.Context, id string) (model.Operation, error) {
	var op model.Operation
	return op, c.do(ctx, http.MethodGet, opPath(id, ""), nil, nil, &op)
}

// Operations lists operations, newest first.
func (c *Client) Operations(ctx context.Context, f OpFilter) ([]model.Operation, error) {
	q := url.Values{}
	if f.VMID != "" {
		q.Set("vm", f.VMID)
	}
	if f.Running {
		q.Set("running", "1")
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var ops []model.Operation
	return ops, c.do(ctx, http.MethodGet, "/v1/operations", q, nil, &ops)
}

// WaitOperation returns operation id once its step differs from step, or it
// ended, or after the daemon's long-poll bound (OperationWaitMax), as it is.
func (c *Client) WaitOperation(ctx context.Context, id, step string) (model.Operation, error) {
	var op model.Operation
	q := url.Values{"wait": {"1"}, "step": {step}}
	return op, c.do(ctx, http.MethodGet, opPath(id, ""), q, nil, &op)
}

// FollowOperation waits until operation id ends, calling fn (when not nil)
// with the operation at every step it records, and returns it as it ended.
// The error is the operation's own when it failed (model.Operation.Err:
// errors.Is works with the model categories), or ctx's when ctx ended
// first: the operation goes on in the daemon either way.
func (c *Client) FollowOperation(ctx context.Context, id string, fn func(model.Operation)) (model.Operation, error) {
	op, err := c.Operation(ctx, id)
	for err == nil {
		if fn != nil {
			fn(op)
		}
		if op.State.Finished() {
			return op, op.Err()
		}
		op, err = c.WaitOperation(ctx, id, op.Step)
	}
	return op, err
}

// CancelOperation cancels an operation where that is safe, and returns it
// as it ended; where it is not, the daemon says why (model.ErrConflict).
func (c *Client) CancelOperation(ctx context.Context, id string) (model.Operation, error) {
	var op model.Operation
	return op, c.do(ctx, http.MethodPost, opPath(id, "/cancel"), nil, nil, &op)
}

// Events returns up to limit events after sequence number afterSeq (limit 0:
// the daemon's default).
func (c *Client) Events(ctx context.Context, afterSeq uint64, limit int) ([]model.Event, error) {
	q := url.Values{"after": {strconv.FormatUint(afterSeq, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var es []model.Event
	return es, c.do(ctx, http.MethodGet, "/v1/events", q, nil, &es)
}

// LastEvents returns the newest n events, oldest first (n from 1 to the
// model.MaxListLimit). To follow on from them, pass the last one's Seq
// to FollowEvents.
func (c *Client) LastEvents(ctx context.Context, n int) ([]model.Event, error) {
	q := url.Values{"tail": {strconv.Itoa(n)}}
	var es []model.Event
	return es, c.do(ctx, http.MethodGet, "/v1/events", q, nil, &es)
}

// FollowEvents calls fn with every event after afterSeq, in order, as they
// happen, until ctx is done (it then returns ctx.Err()), fn returns an error
// (returned as is), or the daemon goes away (model.ErrUnavailable).
func (c *Client) FollowEvents(ctx context.Context, afterSeq uint64, fn func(model.Event) error) error {
	q := url.Values{"after": {strconv.FormatUint(afterSeq, 10)}, "follow": {"1"}}
	resp, err := c.send(ctx, http.MethodGet, "/v1/events", q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue // keep-alive
		}
		var ev model.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("events: bad line from superjoltd: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: event stream from superjoltd broke: %v", model.ErrUnavailable, err)
	}
	return fmt.Errorf("%w: superjoltd closed the event stream (did it stop?)", model.ErrUnavailable)
}

// errGotEvent stops a follow once WaitEvents has its first event.
var errGotEvent = errors.New("got an event")

// WaitEvents blocks until there are events after afterSeq and returns them
// (at most 100), or returns ctx's error when ctx ends first. It suits a loop
// such as a Bubble Tea command that waits for the next batch.
func (c *Client) WaitEvents(ctx context.Context, afterSeq uint64) ([]model.Event, error) {
	if es, err := c.Events(ctx, afterSeq, 0); err != nil || len(es) > 0 {
		return es, err
	}
	err := c.FollowEvents(ctx, afterSeq, func(model.Event) error { return errGotEvent })
	if !errors.Is(err, errGotEvent) {
		return nil, err
	}
	return c.Events(ctx, afterSeq, 0)
}

// AdvanceClock moves a manual clock forward; a daemon on the real clock
// refuses with model.ErrConflict.
func (c *Client) AdvanceClock(ctx context.Context, d time.Duration) (time.Time, error) {
	var r ClockResult
	return r.Now, c.do(ctx, http.MethodPost, "/v1/debug/clock/advance", nil, AdvanceClockRequest{By: Duration(d)}, &r)
}

func vmPath(id, rest string) string { return "/v1/vms/" + url.PathEscape(id) + rest }

func opPath(id, rest string) string { return "/v1/operations/" + url.PathEscape(id) + rest }

// do sends a request with body in (nil: none) and decodes a 2xx answer into
// out (nil: discard).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	resp, err := c.send(ctx, method, path, q, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s %s: cannot read the answer of superjoltd: %w", method, path, err)
	}
	return nil
}

// doList GETs a list and returns it with the cursor of its next page. The
// body is read whole into a buffer of its length, and decoded into a slice
// of the length the daemon announced (CountHeader) with
// github.com/segmentio/encoding/json, a drop-in for encoding/json that
// decodes the same way several times faster, its strings pointing into the
// body instead of copied: 1,000 VMs (450 kB) take about 1.5 ms and 2,000
// allocations instead of 7 ms and 11,000, which was most of `vm list`'s
// time.
func doList[T any](ctx context.Context, c *Client, path string, q url.Values) ([]T, string, error) {
	resp, err := c.send(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var body []byte
	// Sizes from the daemon are hints: a lying one costs at most a few
	// allocations, never one of its choosing beyond what it really sent.
	const maxHint = 64 << 20
	if n := resp.ContentLength; n > 0 && n <= maxHint {
		body = make([]byte, n)
		_, err = io.ReadFull(resp.Body, body)
	} else {
		body, err = io.ReadAll(resp.Body)
	}
	var out []T
	if err == nil {
		if n, _ := strconv.Atoi(resp.Header.Get(CountHeader)); n > 0 && n <= len(body)/2 {
			out = make([]T, 0, n)
		}
		// The strings decoded point into body (DontCopyString) instead of
		// each being copied out: body is this call's own and is never
		// written again, so it is as if they were copies.
		var rest []byte
		if rest, err = fastjson.Parse(body, &out, fastjson.DontCopyString); err == nil && len(rest) != 0 {
			err = fmt.Errorf("invalid character %q after the list", rest[0])
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		return nil, "", fmt.Errorf("GET %s: cannot read the answer of superjoltd: %w", path, err)
	}
	return out, resp.Header.Get(NextCursorHeader), nil
}

// send sends a request and returns a 2xx response, or the error the daemon
// answered with.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	u := path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := c.newRequest(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %v", model.ErrInvalid, method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, c.unreachable(err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, c.decodeError(resp)
}

// unreachable explains a failed connection to the daemon.
func (c *Client) unreachable(err error) error {
	if c.token != "" {
		return fmt.Errorf("%w: cannot reach superjoltd at %s: check --server / SUPERJOLT_SERVER and --ca / SUPERJOLT_CA (%v)", model.ErrUnavailable, c.base, err)
	}
	var ne *net.OpError
	if errors.As(err, &ne) && ne.Op == "dial" {
		return fmt.Errorf("%w: cannot reach superjoltd at %s: is it running? start it with `systemctl start superjoltd` (or run `superjoltd --socket %s`), or point --socket / SUPERJOLT_SOCKET at the right socket (%v)",
			model.ErrUnavailable, c.socket, c.socket, ne.Err)
	}
	return fmt.Errorf("%w: lost the connection to superjoltd at %s: %v", model.ErrUnavailable, c.socket, err)
}

// decodeError reads a failed answer; a 401 from a remote server says how
// to get a token that works.
func (c *Client) decodeError(resp *http.Response) error {
	err := decodeError(resp)
	if resp.StatusCode == http.StatusUnauthorized && c.token != "" {
		return &Error{Code: "unauthenticated", Status: resp.StatusCode,
			Message: "the token is unknown, revoked or expired: ask the operator for a new one (superjolt account token create)"}
	}
	return err
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxRequestBytes))
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
		return &Error{Code: eb.Error.Code, Message: eb.Error.Message, Status: resp.StatusCode}
	}
	msg := string(bytes.TrimSpace(b))
	if msg == "" {
		msg = resp.Status
	}
	return &Error{Code: codeOfStatus(resp.StatusCode), Message: fmt.Sprintf("superjoltd answered %s: %s", resp.Status, clip(msg)), Status: resp.StatusCode}
}

// CA returns the PEM certificate of superjoltd's local CA.
func (c *Client) CA(ctx context.Context) (string, error) {
	var ca CA
	return ca.Cert, c.do(ctx, http.MethodGet, "/v1/ca", nil, nil, &ca)
}
