package mcpserver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// ConfirmTTL is how long a confirmation stays good.
const ConfirmTTL = 5 * time.Minute

// confirmPrefix starts every confirmation (its format's version).
const confirmPrefix = "sjc1."

// ErrConfirmation is a confirmation that is malformed, expired, already
// used, or made for another caller or other arguments.
var ErrConfirmation = errors.New("confirmation refused")

// Confirmer makes and checks the confirmations of the destructive tools.
//
// A confirmation is "sjc1." + base64url(expiry || HMAC-SHA256(key, who,
// tool, args, expiry)), with a random key per Confirmer (one per daemon, or
// per `superjolt mcp` process), so that:
//   - it cannot be forged or edited without the key;
//   - it is bound to who asked (the token's id: another token's call with
//     it is refused) and to the exact action (the tool and its arguments as
//     resolved: a restore's confirmation names the backup id that "yesterday"
//     meant when it was shown, so a later call is refused if that changed);
//   - it is good for ConfirmTTL, and once: a second call with it is
//     refused (the key never leaves the process; a restart forgets every
//     confirmation, which only means asking again).
//
// Confirmations are not stored; only the used ones are remembered, until
// they expire.
type Confirmer struct {
	key []byte
	ttl time.Duration
	now func() time.Time

	mu   sync.Mutex
	used map[string]time.Time // mac -> expiry
}

// NewConfirmer returns a Confirmer with a fresh random key; now is its
// clock (nil: time.Now). Confirmations run on real time, not the
// appliance's clock: they time a person's answer.
func NewConfirmer(now func() time.Time) *Confirmer {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic("mcpserver: no randomness for the confirmation key: " + err.Error())
	}
	if now == nil {
		now = time.Now
	}
	return &Confirmer{key: key, ttl: ConfirmTTL, now: now, used: map[string]time.Time{}}
}

// mac is the HMAC of an action by who, expiring at exp.
func (c *Confirmer) mac(who, tool string, args any, exp int64) []byte {
	b, err := json.Marshal(args)
	if err != nil {
		panic("mcpserver: confirmation arguments: " + err.Error())
	}
	m := hmac.New(sha256.New, c.key)
	var n [8]byte
	for _, part := range [][]byte{[]byte("superjolt mcp confirmation"), []byte(who), []byte(tool), b} {
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		m.Write(n[:])
		m.Write(part)
	}
	binary.BigEndian.PutUint64(n[:], uint64(exp))
	m.Write(n[:])
	return m.Sum(nil)
}

// Issue returns a confirmation of tool with args (any JSON-marshalable
// value: the arguments that decide what is done) for who, and when it
// expires.
func (c *Confirmer) Issue(who, tool string, args any) (string, time.Time) {
	exp := c.now().Add(c.ttl).Truncate(time.Second)
	var buf [8 + sha256.Size]byte
	binary.BigEndian.PutUint64(buf[:8], uint64(exp.Unix()))
	copy(buf[8:], c.mac(who, tool, args, exp.Unix()))
	return confirmPrefix + base64.RawURLEncoding.EncodeToString(buf[:]), exp
}

// Redeem checks that token confirms tool with args for who, and uses it up.
// Every refusal wraps ErrConfirmation and says why in words.
func (c *Confirmer) Redeem(token, who, tool string, args any) error {
	raw, ok := strings.CutPrefix(token, confirmPrefix)
	if !ok || len(token) > 128 {
		return wrapConfirm("it is not a confirmation this server gave: call %s without confirm first", tool)
	}
	buf, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil || len(buf) != 8+sha256.Size {
		return wrapConfirm("it is not a confirmation this server gave: call %s without confirm first", tool)
	}
	exp := int64(binary.BigEndian.Uint64(buf[:8]))
	want := c.mac(who, tool, args, exp)
	if !hmac.Equal(want, buf[8:]) {
		return wrapConfirm("it was given for another action, other arguments or another caller (or by an earlier run of the server): call %s without confirm to get one for this action", tool)
	}
	now := c.now()
	if now.Unix() >= exp {
		return wrapConfirm("it expired at %s (confirmations last %s): call %s without confirm again", time.Unix(exp, 0).UTC().Format(time.RFC3339), c.ttl, tool)
	}
	key := string(buf[8:])
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.used {
		if now.Unix() >= e.Unix() {
			delete(c.used, k)
		}
	}
	if _, ok := c.used[key]; ok {
		return wrapConfirm("it was used already: each confirmation acts once; call %s without confirm again", tool)
	}
	c.used[key] = time.Unix(exp, 0)
	return nil
}

func wrapConfirm(format string, args ...any) error {
	return &confirmError{msg: fmt.Sprintf(format, args...)}
}

type confirmError struct{ msg string }

func (e *confirmError) Error() string { return "confirmation refused: " + e.msg }
func (e *confirmError) Unwrap() error { return ErrConfirmation }
