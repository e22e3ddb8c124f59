package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	// The zone database, for LoadZone on a box without tzdata.
	_ "time/tzdata"

	"github.com/superjolt/superjolt/appliance/model"
)

// DefaultSocket is where superjoltd listens and clients dial unless told
// otherwise (superjoltd --socket, superjolt --socket or SUPERJOLT_SOCKET).
const DefaultSocket = "/run/superjolt/superjolt.sock"

// MaxRequestBytes caps a request body; larger ones are refused as invalid.
const MaxRequestBytes = 1 << 20

// Status is the daemon's answer to GET /v1/status.
type Status struct {
	// Now is the appliance's clock.
	Now time.Time `json:"now"`
	// Clock is "real", or "manual" when superjoltd runs with --clock=manual
	// and /v1/debug/clock/advance moves it.
	Clock string `json:"clock"`
	// Version is superjoltd's build (see package version).
	Version string `json:"version"`
	// Capacity is the host's memory and CPUs and what the VMs hold, and
	// whether guests run under KVM or TCG.
	Capacity model.Capacity `json:"capacity"`
}

// CreateAccountRequest is the body of POST /v1/accounts.
type CreateAccountRequest struct {
	Name string `json:"name"`
	// Balance is the opening balance in micro-credits; 0 or a valid amount.
	Balance model.Micro `json:"balance"`
	// BackupRetention is how many scheduled backups per VM the account
	// keeps; 0 means model.DefaultBackupRetention.
	BackupRetention int `json:"backup_retention,omitempty"`
}

// Validate checks what can be checked without the appliance.
func (r CreateAccountRequest) Validate() error {
	if err := model.ValidateAccountName(r.Name); err != nil {
		return err
	}
	if r.Balance != 0 {
		if err := model.ValidateAmount(r.Balance); err != nil {
			return fmt.Errorf("opening balance: %w", err)
		}
	}
	if r.BackupRetention != 0 {
		e := model.DefaultEntitlements()
		e.BackupRetention = r.BackupRetention
		if err := e.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// TopUpRequest is the body of POST /v1/accounts/{id}/topup.
type TopUpRequest struct {
	Amount model.Micro `json:"amount"` // micro-credits
}

// Validate checks the amount.
func (r TopUpRequest) Validate() error { return model.ValidateAmount(r.Amount) }

// AdjustRequest is the body of POST /v1/accounts/{id}/adjust: an
// operator's correction of the balance, with its reason.
type AdjustRequest struct {
	Amount model.Micro `json:"amount"` // micro-credits; negative takes back, never zero
	Reason string      `json:"reason"` // required; at most model.MaxReasonLen bytes, one line
}

// Validate checks the amount and the reason.
func (r AdjustRequest) Validate() error { return model.ValidateAdjustment(r.Amount, r.Reason) }

// SSHKeysRequest is the body of PUT /v1/accounts/{id}/ssh-keys: the
// account's default SSH keys, which replace the ones it had; none clears
// them.
type SSHKeysRequest struct {
	SSHKeys []string `json:"ssh_keys"`
}

// Validate checks the keys (see model.ParseSSHKeys).
func (r SSHKeysRequest) Validate() error {
	_, err := model.NormalizeSSHKeys(r.SSHKeys)
	return err
}

// CreateTokenRequest is the body of POST /v1/accounts/{id}/tokens.
type CreateTokenRequest struct {
	// Name says whose or what the token is ("laptop", "assistant"); events
	// name it. Empty: the token is named after its id.
	Name string `json:"name,omitempty"`
	// ReadOnly tokens may read and never change anything.
	ReadOnly bool `json:"read_only,omitempty"`
	// ExpiresIn is the token's lifetime, a string such as "30d" or "12h";
	// absent: the token does not expire.
	ExpiresIn Duration `json:"expires_in,omitempty"`
}

// Validate checks the name and the lifetime.
func (r CreateTokenRequest) Validate() error {
	if r.Name != "" {
		if err := model.ValidateTokenName(r.Name); err != nil {
			return err
		}
	}
	return model.ValidateTokenLifetime(time.Duration(r.ExpiresIn))
}

// CreatedToken is the answer to POST /v1/accounts/{id}/tokens: the token
// and its secret, which superjoltd keeps only a hash of and never shows
// again.
type CreatedToken struct {
	Token  model.Token `json:"token"`
	Secret string      `json:"secret"`
}

// CreateVMRequest is the body of POST /v1/vms.
type CreateVMRequest struct {
	AccountID string `json:"account_id"`
	Tier      string `json:"tier"`
	// Image is the image to start from; "" means the built-in one.
	Image string `json:"image,omitempty"`
	// Name is the VM's hostname; "" lets the appliance pick one.
	Name string `json:"name,omitempty"`
	// Overcommit creates the VM even when its memory does not fit in what
	// the host has left.
	Overcommit bool `json:"overcommit,omitempty"`
	// SSHKeys are OpenSSH public keys (one an element) for root's
	// authorized_keys in the new VM, after its account's default ones.
	SSHKeys []string `json:"ssh_keys,omitempty"`
}

// Validate checks the ids, names and SSH keys.
func (r CreateVMRequest) Validate() error {
	if err := model.ValidateID(model.KindAccount, r.AccountID); err != nil {
		return err
	}
	if err := model.ValidateTierName(r.Tier); err != nil {
		return err
	}
	if r.Image != "" {
		if err := model.ValidateImageName(r.Image); err != nil {
			return err
		}
	}
	if r.Name != "" {
		if err := model.ValidateVMName(r.Name); err != nil {
			return err
		}
	}
	_, err := model.NormalizeSSHKeys(r.SSHKeys)
	return err
}

// VMFilter selects VMs for GET /v1/vms (query parameters account, state,
// name_prefix and image); zero fields select all.
type VMFilter struct {
	AccountID  string
	State      model.VMState
	NamePrefix string
	Image      string
}

// Validate checks the filter's fields when set.
func (f VMFilter) Validate() error {
	return model.ValidateVMFilter(f.AccountID, f.State, f.NamePrefix, f.Image)
}

// BackupFilter selects backups across VMs for GET /v1/backups (query
// parameters account, vm and kind); zero fields select all.
type BackupFilter struct {
	AccountID string
	VMID      string
	Kind      model.BackupKind
}

// Validate checks the filter's fields when set.
func (f BackupFilter) Validate() error {
	return model.ValidateBackupFilter(f.AccountID, f.VMID, f.Kind)
}

// Page selects a page of GET /v1/vms or GET /v1/backups (query parameters
// limit and cursor). With no limit the answer is the whole list, as one
// JSON array. With a limit of 1 to MaxPageLimit it is at most that many
// items, and when more follow, the NextCursorHeader of the answer holds the
// cursor to pass for the next page. A cursor names a place in the list's
// order (not an offset): pages walked while VMs come and go never repeat
// an item nor skip one that existed throughout.
type Page struct {
	Limit  int
	Cursor string
}

// MaxPageLimit is the largest page limit.
const MaxPageLimit = 1000

// NextCursorHeader is the answer header with the cursor of the next page;
// absent on the last page.
const NextCursorHeader = "X-Next-Cursor"

// CountHeader is the answer header with the number of items in a list's
// answer (a page or the whole list), for a client to size what it decodes
// into.
const CountHeader = "X-Count"

// Validate checks the page's limit.
func (p Page) Validate() error {
	if p.Limit < 0 || p.Limit > MaxPageLimit {
		return fmt.Errorf("%w: page limit %d is out of range: ask for 1 to %d items a page (or give no limit for the whole list)", model.ErrInvalid, p.Limit, MaxPageLimit)
	}
	return nil
}

// DestroyResult is what `superjolt vm destroy -o json` prints once the
// destroy operation has ended.
type DestroyResult struct {
	VM model.VM `json:"vm"`
	// Reclaimed is true when the VM was younger than an hour and is gone for
	// good; false when it went to the graveyard (resume before VM.ReclaimAt).
	Reclaimed bool `json:"reclaimed"`
}

// OpFilter selects operations in a list; zero fields select all.
type OpFilter struct {
	VMID    string
	Running bool
	Limit   int
}

// OperationWaitMax bounds one long poll of an operation
// (GET /v1/operations/{id}?wait=1): the daemon answers with the operation
// as it is then, and a follower asks again.
const OperationWaitMax = 25 * time.Second

// DefaultExecTimeout is the exec time limit when ExecRequest.Timeout is 0:
// the guest agent's (guest.DefaultExecTimeout).
const DefaultExecTimeout = 60 * time.Second

// MaxExecArgs bounds the arguments of an exec request.
const MaxExecArgs = 1024

// ExecRequest is the body of POST /v1/vms/{id}/exec: a program to run in the
// guest through its agent.
type ExecRequest struct {
	Path  string   `json:"path"`
	Args  []string `json:"args,omitempty"`
	Stdin []byte   `json:"stdin,omitempty"` // base64 in JSON
	// Timeout kills the program after this long; 0 means the agent's default.
	Timeout Duration `json:"timeout,omitempty"`
	// TTY (streaming exec only) runs the program on a pseudo-terminal of
	// Size with TERM=Term; its output all comes as stdout.
	TTY  bool       `json:"tty,omitempty"`
	Term string     `json:"term,omitempty"`
	Size WindowSize `json:"size,omitzero"`
}

// WindowSize is a terminal's size in characters.
type WindowSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Validate checks the request's shape; the guest decides whether the
// program exists.
func (r ExecRequest) Validate() error {
	switch {
	case r.Path == "":
		return invalidf("exec: no program given; put it after --, like: superjolt vm exec vm-abc123 -- cat /etc/hostname")
	case strings.ContainsRune(r.Path, 0):
		return invalidf("exec: program name contains a NUL byte")
	case len(r.Args) > MaxExecArgs:
		return invalidf("exec: %d arguments is more than the %d allowed", len(r.Args), MaxExecArgs)
	case len(r.Term) > 64 || strings.ContainsFunc(r.Term, func(c rune) bool { return c <= ' ' || c > '~' }):
		return invalidf("exec: terminal type %q is not a plain name like xterm-256color", r.Term)
	case r.Timeout < 0 || time.Duration(r.Timeout) > model.MaxExecTimeout:
		return invalidf("exec: timeout %s is out of range (0 to %s)", r.Timeout, Duration(model.MaxExecTimeout))
	}
	for _, a := range r.Args {
		if strings.ContainsRune(a, 0) {
			return invalidf("exec: an argument contains a NUL byte")
		}
	}
	return nil
}

// ExecResult is how a program run in the guest ended.
type ExecResult struct {
	// ExitCode is the exit status, or -1 when a signal ended the program.
	ExitCode int `json:"exit_code"`
	// Signal is the signal that ended the program, 0 if it exited.
	Signal int    `json:"signal,omitempty"`
	Stdout []byte `json:"stdout"` // base64 in JSON
	Stderr []byte `json:"stderr"` // base64 in JSON
	// Truncated is set when either stream was longer than the agent keeps.
	Truncated bool `json:"truncated"`
	// TimedOut is set when the agent killed the program at its timeout.
	TimedOut bool `json:"timed_out"`
}

// The streaming exec, POST /v1/vms/{id}/exec/stream, is full-duplex
// HTTP/1.1 over the UNIX socket. The request body is NDJSON: an ExecRequest
// (its Stdin left empty), then ExecInput lines as the caller's stdin comes;
// the end of the body closes the program's stdin. Once the program runs,
// the answer is 200 with an NDJSON body of ExecFrames as its output comes,
// ending with one that has Exit or Error set. A failure before the program
// runs is an ordinary JSON error. Closing the connection interrupts the
// program (SIGINT to its process group, SIGKILL 2 s later).

// ExecInput is one line of a streaming exec's request body after the
// ExecRequest.
type ExecInput struct {
	// Stdin is written to the program's standard input (base64 in JSON).
	Stdin []byte `json:"stdin,omitempty"`
	// EOF closes the program's standard input.
	EOF bool `json:"eof,omitempty"`
	// Resize gives a TTY exec's terminal a new size.
	Resize *WindowSize `json:"resize,omitempty"`
}

// MaxExecInput bounds the Stdin of one ExecInput line.
const MaxExecInput = 64 << 10

// ExecFrame is one line of a streaming exec's answer: exactly one field set.
type ExecFrame struct {
	Stdout []byte `json:"stdout,omitempty"` // base64 in JSON
	Stderr []byte `json:"stderr,omitempty"` // base64 in JSON
	// Exit ends the stream: how the program ended (its Stdout and Stderr
	// empty: they came in frames).
	Exit *ExecResult `json:"exit,omitempty"`
	// Error ends the stream: the exec broke after the program started.
	Error *ErrorDetail `json:"error,omitempty"`
}

// DomainRequest is the body of POST /v1/vms/{id}/domains.
type DomainRequest struct {
	Domain string `json:"domain"`
	// Port is the VM's port the domain is proxied to (0: 80).
	Port uint16 `json:"port,omitempty"`
}

// Validate checks the domain name (in any case: DNS names are not case
// sensitive; the appliance keeps them in lowercase).
func (r DomainRequest) Validate() error { return model.ValidateDomain(model.NormalizeDomain(r.Domain)) }

// RestoreRequest is the body of POST /v1/vms/{id}/restore: exactly one of
// BackupID and From.
type RestoreRequest struct {
	BackupID string `json:"backup_id,omitempty"`
	// From is "latest", "yesterday" or a date YYYY-MM-DD: the newest backup
	// of the VM taken that day, in TZ.
	From string `json:"from,omitempty"`
	// TZ is the IANA time zone the days of From are read in (default UTC);
	// see model.PickBackup.
	TZ string `json:"tz,omitempty"`
}

// Validate checks that the request names one backup.
func (r RestoreRequest) Validate() error {
	switch {
	case r.BackupID != "" && r.From != "":
		return invalidf("restore: give a backup id or from, not both")
	case r.BackupID != "":
		return model.ValidateID(model.KindBackup, r.BackupID)
	case r.From != "":
		if _, err := LoadZone(r.TZ); err != nil {
			return err
		}
		return model.ValidateFrom(r.From)
	}
	return invalidf("restore: say which backup: a backup id, or from latest, yesterday or a date YYYY-MM-DD")
}

// LoadZone returns the IANA time zone name names ("" is UTC), or an
// invalid error saying what a zone looks like.
func LoadZone(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	if len(name) > 64 || strings.ContainsAny(name, " \x00") {
		return nil, invalidf("time zone %q: give an IANA zone name like Europe/Berlin or UTC", clip(name))
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, invalidf("time zone %q is unknown: give an IANA zone name like Europe/Berlin or UTC", clip(name))
	}
	return loc, nil
}

// AdvanceClockRequest is the body of POST /v1/debug/clock/advance.
type AdvanceClockRequest struct {
	By Duration `json:"by"`
}

// MaxClockAdvance bounds a single clock advance.
const MaxClockAdvance = 366 * 24 * time.Hour

// Validate checks the duration.
func (r AdvanceClockRequest) Validate() error {
	if r.By <= 0 || time.Duration(r.By) > MaxClockAdvance {
		return invalidf("advance the clock by a positive duration up to %s, like 90m, 24h or 7d", Duration(MaxClockAdvance))
	}
	return nil
}

// ClockResult is the answer to POST /v1/debug/clock/advance.
type ClockResult struct {
	Now time.Time `json:"now"`
}

// Duration is a time.Duration written in JSON as a string: Go's syntax
// ("90s", "1h30m") plus whole days ("7d", "1d12h").
type Duration time.Duration

// String formats d with days when it has any: "7d", "1d2h0m0s", "90s".
func (d Duration) String() string {
	td := time.Duration(d)
	const day = 24 * time.Hour
	if td >= day {
		days := td / day
		rest := td % day
		if rest == 0 {
			return strconv.FormatInt(int64(days), 10) + "d"
		}
		return strconv.FormatInt(int64(days), 10) + "d" + rest.String()
	}
	return td.String()
}

// MarshalJSON writes d as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a string written by MarshalJSON or by a person.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return invalidf("a duration is a string like \"90s\", \"24h\" or \"7d\"")
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses Go's duration syntax with whole days added as a
// leading "Nd": "24h", "7d", "1d12h", "90m".
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	bad := func() (time.Duration, error) {
		return 0, invalidf("duration %q: write it like 90s, 45m, 24h, 7d or 1d12h", clip(orig))
	}
	var days int64
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n < 0 || n > 100_000 || s[:i] == "" || s[0] == '+' {
			return bad()
		}
		days, s = n, s[i+1:]
		if s == "" {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || (days > 0 && d < 0) {
		return bad()
	}
	return time.Duration(days)*24*time.Hour + d, nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", model.ErrInvalid, fmt.Sprintf(format, args...))
}

// clip shortens s for an error message.
func clip(s string) string {
	const max = 40
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// ParsePort parses a port as users write it: "80/tcp", "53/udp", or "443"
// (tcp).
func ParsePort(s string) (model.Port, error) {
	nums, proto, ok := strings.Cut(s, "/")
	if !ok {
		proto = "tcp"
	}
	if strings.Contains(nums, "-") {
		return model.Port{}, invalidf("port %q: ranges are not forwarded; add one port at a time, like 8080:80/tcp", clip(s))
	}
	host, guest, mapped := strings.Cut(nums, ":")
	number := func(v string) (uint16, bool) {
		n, err := strconv.ParseUint(v, 10, 16)
		return uint16(n), err == nil && n > 0
	}
	h, okH := number(host)
	g, okG := h, true
	if mapped {
		g, okG = number(guest)
	}
	if !okH || !okG {
		return model.Port{}, invalidf("port %q: write it as HOSTPORT[:GUESTPORT][/tcp|/udp], like 8080:80/tcp or 53/udp (ports 1-65535)", clip(s))
	}
	p := model.Port{Proto: strings.ToLower(proto), Number: h}
	if g != h {
		p.GuestPort = g
	}
	if err := model.ValidatePort(p); err != nil {
		return model.Port{}, err
	}
	return p, nil
}

// CA is the local certificate authority's certificate (GET /v1/ca), which
// signs the HTTPS certificates superjoltd's proxy gives the VMs' domains
// when the operator gave none: a client that trusts it can reach them.
type CA struct {
	Cert string `json:"cert"` // PEM
}

// BuildImageRequest is the body of POST /v1/images/build.
type BuildImageRequest struct {
	// Recipe is the image to build ("debian-12").
	Recipe string `json:"recipe"`
	// Name is the new image's name; "" is the recipe's.
	Name string `json:"name,omitempty"`
	// Packages are installed beyond the recipe's own.
	Packages []string `json:"packages,omitempty"`
}

// MaxImageBytes caps an uploaded image (POST /v1/images/import).
const MaxImageBytes = 64 << 30

// ImageProgress is one line of the answer of POST /v1/images/import and
// /v1/images/build, which stream newline-delimited JSON: Progress lines
// while the image is made, then one line with Image (done) or Error (failed).
type ImageProgress struct {
	Progress string       `json:"progress,omitempty"`
	Image    *model.Image `json:"image,omitempty"`
	Error    *ErrorDetail `json:"error,omitempty"`
}

// Validate checks the shape; the recipe and packages are the daemon's to judge.
func (r BuildImageRequest) Validate() error {
	if r.Recipe == "" {
		return invalidf("recipe is required (`superjolt image build --help` lists them)")
	}
	if r.Name != "" {
		if err := model.ValidateImageName(r.Name); err != nil {
			return invalidf("name: %v", err)
		}
	}
	return nil
}
