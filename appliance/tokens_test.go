package appliance

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// token creates a token and fails the test on an error.
func (e *env) token(req CreateTokenRequest) (model.Token, string) {
	e.t.Helper()
	tok, secret, err := e.a.CreateToken(context.Background(), req)
	if err != nil {
		e.t.Fatalf("CreateToken(%+v): %v", req, err)
	}
	return tok, secret
}

// wantUnauthenticated fails unless Authenticate refuses secret.
func (e *env) wantUnauthenticated(what, secret string) {
	e.t.Helper()
	p, err := e.a.Authenticate(context.Background(), secret)
	if !errors.Is(err, model.ErrUnauthenticated) {
		e.t.Fatalf("Authenticate(%s %q) = %+v, %v; want unauthenticated", what, secret, p, err)
	}
}

func TestTokenAuthenticate(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	alice := e.account("alice", 10*model.Credit, 0)
	bob := e.account("bob", 10*model.Credit, 0)

	tok, secret := e.token(CreateTokenRequest{AccountID: alice.ID, Name: "laptop", ReadOnly: true})
	if len(secret) != TokenSecretLen || !strings.HasPrefix(secret, "sjt_"+tok.ID+"_") {
		t.Fatalf("secret %q: want sjt_%s_ and %d characters", secret, tok.ID, TokenSecretLen)
	}
	if tok.AccountID != alice.ID || tok.Name != "laptop" || !tok.ReadOnly || !tok.CreatedAt.Equal(t0) || !tok.ExpiresAt.IsZero() || tok.Hash != nil {
		t.Fatalf("created token = %+v", tok)
	}
	p, err := e.a.Authenticate(ctx, secret)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	want := model.Principal{AccountID: alice.ID, TokenID: tok.ID, TokenName: "laptop", ReadOnly: true}
	if p != want || p.Operator() {
		t.Fatalf("Authenticate = %+v, want %+v", p, want)
	}

	full, fullSecret := e.token(CreateTokenRequest{AccountID: alice.ID, Name: "assistant"})
	if p, err := e.a.Authenticate(ctx, fullSecret); err != nil || p.ReadOnly || p.TokenID != full.ID {
		t.Fatalf("Authenticate(full access token) = %+v, %v", p, err)
	}
	bobTok, bobSecret := e.token(CreateTokenRequest{AccountID: bob.ID, Name: "laptop"}) // names are per account
	if p, err := e.a.Authenticate(ctx, bobSecret); err != nil || p.AccountID != bob.ID {
		t.Fatalf("Authenticate(bob's token) = %+v, %v", p, err)
	}

	randPart := secret[len(secret)-tokenRandLen:]
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	for _, c := range []struct{ what, secret string }{
		{"another token's secret part", secret[:len(secret)-tokenRandLen] + fullSecret[len(fullSecret)-tokenRandLen:]},
		{"another token's id", "sjt_" + full.ID + "_" + randPart},
		{"another account's token id", "sjt_" + bobTok.ID + "_" + randPart},
		{"an unknown id", "sjt_tk-0000000000_" + randPart},
		{"a flipped first character", flip(secret, len(secret)-tokenRandLen)},
		{"a flipped middle character", flip(secret, len(secret)-20)},
		{"a flipped id character", flip(secret, 8)},
		{"empty", ""},
		{"no prefix", strings.TrimPrefix(secret, "sjt_")},
		{"another prefix", "sjx_" + secret[4:]},
		{"upper-case prefix", "SJT_" + secret[4:]},
		{"bearer scheme kept", "Bearer " + secret},
		{"too long", secret + "A"},
		{"too short", secret[:len(secret)-1]},
		{"a trailing newline", secret[:len(secret)-1] + "\n"},
		{"a space inside", secret[:30] + " " + secret[31:]},
		{"non-base64", secret[:len(secret)-1] + "="},
		{"standard base64", secret[:len(secret)-2] + "+/"},
		{"non-zero padding bits", secret[:len(secret)-1] + flipLowBits(secret[len(secret)-1])},
		{"an extra underscore", "sjt__" + secret[5:]},
		{"underscores for the separator", strings.Replace(secret, "_"+tok.ID+"_", "__"+tok.ID[1:]+"_", 1)},
		{"no separator", "sjt_" + tok.ID + "A" + randPart},
		{"the hash's bytes", "sjt_" + tok.ID + "_" + strings.Repeat("A", tokenRandLen)},
		{"non-ASCII", strings.Replace(secret, secret[20:22], "é", 1)},
	} {
		e.wantUnauthenticated(c.what, c.secret)
	}
	if _, err := e.a.Authenticate(ctx, "nope"); err == nil || !strings.Contains(err.Error(), "malformed token") {
		t.Fatalf("Authenticate(nope) = %v, want a malformed token", err)
	}
	_, err = e.a.Authenticate(ctx, "sjt_tk-0000000000_"+randPart)
	if err == nil || !strings.Contains(err.Error(), "unknown, revoked or expired token") || strings.Contains(err.Error(), "tk-0000000000") {
		t.Fatalf("Authenticate(unknown id) = %v, want one message that names nothing", err)
	}
	// Still good after all that.
	if _, err := e.a.Authenticate(ctx, secret); err != nil {
		t.Fatalf("Authenticate after refusals: %v", err)
	}
}

// flipLowBits returns the base64url character that differs from c in its
// lowest bit: the last character of 32 bytes carries 2 unused bits.
func flipLowBits(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[i^1])
}

func TestTokenExpiresRevokesAndRecordsUse(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	alice := e.account("alice", 10*model.Credit, 0)

	tok, secret := e.token(CreateTokenRequest{AccountID: alice.ID, Name: "day", ExpiresIn: 24 * time.Hour})
	if !tok.ExpiresAt.Equal(t0.Add(24 * time.Hour)) {
		t.Fatalf("ExpiresAt = %s, want a day after %s", tok.ExpiresAt, t0)
	}
	lastUsed := func() time.Time {
		t.Helper()
		ts, err := e.a.Tokens(ctx, alice.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ts {
			if x.ID == tok.ID {
				return x.LastUsedAt
			}
		}
		t.Fatalf("Tokens does not list %s", tok.ID)
		return time.Time{}
	}
	if !lastUsed().IsZero() {
		t.Fatal("a token never used has a LastUsedAt")
	}
	auth := func() {
		t.Helper()
		if _, err := e.a.Authenticate(ctx, secret); err != nil {
			t.Fatalf("Authenticate at %s: %v", e.clk.Now(), err)
		}
	}
	auth()
	if got := lastUsed(); !got.Equal(t0) {
		t.Fatalf("LastUsedAt = %s, want %s", got, t0)
	}
	e.clk.Advance(59 * time.Second)
	auth()
	if got := lastUsed(); !got.Equal(t0) {
		t.Fatalf("LastUsedAt = %s after a use 59 s later, want it kept at %s (written at most once a minute)", got, t0)
	}
	e.clk.Advance(time.Second)
	auth()
	if got := lastUsed(); !got.Equal(t0.Add(time.Minute)) {
		t.Fatalf("LastUsedAt = %s a minute later, want %s", got, t0.Add(time.Minute))
	}

	e.clk.Set(t0.Add(24*time.Hour - time.Nanosecond))
	auth()
	e.clk.Set(t0.Add(24 * time.Hour))
	e.wantUnauthenticated("an expired token", secret)
	e.clk.Advance(time.Hour)
	e.wantUnauthenticated("an expired token", secret)
	// Its name is free again once it expired.
	again, againSecret := e.token(CreateTokenRequest{AccountID: alice.ID, Name: "day"})
	auth2 := func() error { _, err := e.a.Authenticate(ctx, againSecret); return err }
	if err := auth2(); err != nil {
		t.Fatal(err)
	}

	r, err := e.a.RevokeToken(ctx, again.ID)
	if err != nil || !r.RevokedAt.Equal(e.clk.Now()) || r.Hash != nil {
		t.Fatalf("RevokeToken = %+v, %v", r, err)
	}
	e.wantUnauthenticated("a revoked token", againSecret)
	e.clk.Advance(time.Hour)
	r2, err := e.a.RevokeToken(ctx, again.ID)
	if err != nil || !r2.RevokedAt.Equal(r.RevokedAt) {
		t.Fatalf("RevokeToken twice = %+v, %v; want the first revocation kept, no error", r2, err)
	}
	if evs := e.eventsOfType("token.revoked"); len(evs) != 1 {
		t.Fatalf("token.revoked events after revoking twice: %+v, want one", evs)
	}
	_, err = e.a.RevokeToken(ctx, "tk-0000000000")
	wantCode(t, err, "not_found")
	_, err = e.a.RevokeToken(ctx, "vm-abc123")
	wantCode(t, err, "invalid")

	ts, err := e.a.Tokens(ctx, alice.ID)
	if err != nil || len(ts) != 2 || ts[0].ID != again.ID || ts[1].ID != tok.ID {
		t.Fatalf("Tokens = %+v, %v; want %s then %s, newest first", ts, err, again.ID, tok.ID)
	}
}

func TestTokenNames(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	alice := e.account("alice", 10*model.Credit, 0)

	tok, _ := e.token(CreateTokenRequest{AccountID: alice.ID, Name: "Laptop"})
	_, _, err := e.a.CreateToken(ctx, CreateTokenRequest{AccountID: alice.ID, Name: "laptop"})
	wantCode(t, err, "conflict")
	if !strings.Contains(err.Error(), tok.ID) {
		t.Fatalf("name conflict %v does not name the token that holds the name", err)
	}
	if _, err := e.a.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	e.token(CreateTokenRequest{AccountID: alice.ID, Name: "laptop"}) // free once revoked

	unnamed, _ := e.token(CreateTokenRequest{AccountID: alice.ID})
	if unnamed.Name != unnamed.ID {
		t.Fatalf("a token made without a name is called %q, want its id", unnamed.Name)
	}
	e.token(CreateTokenRequest{AccountID: alice.ID, Name: strings.Repeat("é", model.MaxTokenNameLen)})
	for _, c := range []struct {
		req  CreateTokenRequest
		code string
	}{
		{CreateTokenRequest{AccountID: alice.ID, Name: " padded"}, "invalid"},
		{CreateTokenRequest{AccountID: alice.ID, Name: "tab\there"}, "invalid"},
		{CreateTokenRequest{AccountID: alice.ID, Name: "new\nline"}, "invalid"},
		{CreateTokenRequest{AccountID: alice.ID, Name: "\xff"}, "invalid"},
		{CreateTokenRequest{AccountID: alice.ID, Name: strings.Repeat("x", model.MaxTokenNameLen+1)}, "invalid"},
		{CreateTokenRequest{AccountID: alice.ID, Name: "neg", ExpiresIn: -time.Hour}, "invalid"},
		{CreateTokenRequest{AccountID: alice.ID, Name: "short", ExpiresIn: time.Second}, "invalid"},
		{CreateTokenRequest{AccountID: alice.ID, Name: "long", ExpiresIn: model.MaxTokenLifetime + time.Hour}, "invalid"},
		{CreateTokenRequest{AccountID: "bad", Name: "x"}, "invalid"},
		{CreateTokenRequest{AccountID: "ac-zzzzzz", Name: "x"}, "not_found"},
	} {
		_, secret, err := e.a.CreateToken(ctx, c.req)
		if model.Code(err) != c.code || secret != "" {
			t.Errorf("CreateToken(%+v) = %q, %v; want %s", c.req, secret, err, c.code)
		}
	}
	_, err = e.a.Tokens(ctx, "ac-zzzzzz")
	wantCode(t, err, "not_found")
	if !strings.Contains(err.Error(), "account ac-zzzzzz does not exist") {
		t.Fatalf("Tokens of an unknown account: %v", err)
	}
}

// TestTokenSecretNeverStored reads every key and value Badger holds, and
// the raw files of the state directory, for the secret: only its hash may
// be there. Events name the token, never its secret.
func TestTokenSecretNeverStored(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	alice := e.account("alice", 10*model.Credit, 0)
	tok, secret := e.token(CreateTokenRequest{AccountID: alice.ID, Name: "assistant", ExpiresIn: 30 * 24 * time.Hour})
	if _, err := e.a.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	randPart := []byte(secret[len(secret)-tokenRandLen:])

	for _, typ := range []string{"token.created", "token.revoked"} {
		evs := e.eventsOfType(typ)
		if len(evs) != 1 {
			t.Fatalf("%s events: %+v, want one", typ, evs)
		}
		ev := evs[0]
		if ev.Object != tok.ID || ev.Account != alice.ID || !strings.Contains(ev.Message, `"assistant"`) ||
			strings.Contains(ev.Message, string(randPart)) || strings.Contains(ev.Message, "sjt_") {
			t.Fatalf("%s event %+v: want it about %s of %s, naming \"assistant\", without the secret", typ, ev, tok.ID, alice.ID)
		}
	}
	if err := e.st.View(ctx, func(tx *store.Tx) error {
		stored, err := tx.Token(tok.ID)
		if err == nil && len(stored.Hash) != 32 {
			t.Errorf("stored token has a %d-byte hash, want SHA-256's 32", len(stored.Hash))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(e.stateDir, "db")
	e.close()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	err = db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.AllVersions = true
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
			k := it.Item().KeyCopy(nil)
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if bytes.Contains(k, randPart) || bytes.Contains(v, randPart) {
				t.Errorf("the store holds the secret at %q: %s", k, v)
			}
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("scan the store: %d keys, %v", n, err)
	}
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if bytes.Contains(b, randPart) {
			t.Errorf("%s holds the secret", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTokenOfDeletedAccount: a token stops working with its account.
func TestTokenOfDeletedAccount(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	alice := e.account("alice", 0, 0)
	_, secret := e.token(CreateTokenRequest{AccountID: alice.ID, Name: "laptop"})
	if _, err := e.a.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteAccount(alice.ID) }); err != nil {
		t.Fatal(err)
	}
	e.wantUnauthenticated("a token of a deleted account", secret)
}

// FuzzAuthenticate: no string authenticates but the exact secrets made,
// and none makes Authenticate panic.
func FuzzAuthenticate(f *testing.F) {
	e := newEnv(f, envOptions{})
	alice := e.account("alice", 0, 0)
	_, secret := e.token(CreateTokenRequest{AccountID: alice.ID, Name: "laptop"})
	tok2, secret2 := e.token(CreateTokenRequest{AccountID: alice.ID, Name: "other"})
	for _, s := range []string{
		secret, secret2, "", "sjt_", "sjt_" + tok2.ID + "_", secret + "=", secret[:len(secret)-1],
		strings.ToUpper(secret), strings.Replace(secret, "_", "-", 1), secret[:20] + secret2[20:],
		secret2[:len(secret2)-tokenRandLen] + secret[len(secret)-tokenRandLen:],
		"sjt_" + strings.Repeat("_", TokenSecretLen-4), strings.Repeat("\x00", TokenSecretLen),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := e.a.Authenticate(context.Background(), s)
		switch {
		case err == nil && s != secret && s != secret2:
			t.Fatalf("Authenticate(%q) = %+v: authenticated a string that is no secret", s, p)
		case err != nil && (s == secret || s == secret2):
			t.Fatalf("Authenticate(the secret) = %v", err)
		case err != nil && !errors.Is(err, model.ErrUnauthenticated):
			t.Fatalf("Authenticate(%q) = %v, want unauthenticated", s, err)
		}
	})
}
