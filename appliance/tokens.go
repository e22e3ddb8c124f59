package appliance

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// Account tokens: what lets an account's people and their assistants act
// for the account over the network (the remote API, MCP). The rules:
//
//   - A secret reads sjt_<token id>_<43 characters of base64url>: 32 bytes
//     from crypto/rand. The id lets the daemon find the token's row; the
//     store keeps only the SHA-256 of the whole secret (so the hash binds
//     the id too), and the secret is shown once, when it is made.
//   - A token's name is unique, whatever its case, among the account's
//     live tokens (neither revoked nor expired); events name it.
//   - Authenticate parses strictly, compares hashes in constant time and
//     refuses a revoked or expired token, or one whose account no longer
//     exists, all with the same message: which part was wrong is not said.
//   - Revoking is idempotent: a second revoke answers the token as it is,
//     revoked at the first time, and records no second event.
//   - LastUsedAt is written at most once per TokenUseGranularity, so a
//     busy token costs no Badger write per request.

// TokenUseGranularity is how stale a token's LastUsedAt may be: an
// authentication writes it only when it is older than this.
const TokenUseGranularity = time.Minute

const (
	tokenPrefix    = "sjt_"
	tokenRandBytes = 32
)

// tokenRandLen is the length of a secret's random part (unpadded base64url).
var tokenRandLen = base64.RawURLEncoding.EncodedLen(tokenRandBytes)

// TokenSecretLen is the length of every secret: sjt_, the id, _, the random part.
var TokenSecretLen = len(tokenPrefix) + len(model.KindToken) + 1 + 10 + 1 + tokenRandLen

// CreateTokenRequest is what CreateToken needs.
type CreateTokenRequest struct {
	AccountID string
	// Name says whose or what the token is; "" names it after its id.
	Name string
	// ReadOnly tokens may read and never change anything.
	ReadOnly bool
	// ExpiresIn is the token's lifetime from now on the appliance's clock;
	// 0 is a token that does not expire (see model.ValidateTokenLifetime).
	ExpiresIn time.Duration
}

// CreateToken makes an account token and returns it with its secret, which
// is never stored or shown again: only its SHA-256 is kept.
func (a *Appliance) CreateToken(ctx context.Context, req CreateTokenRequest) (model.Token, string, error) {
	if err := model.ValidateID(model.KindAccount, req.AccountID); err != nil {
		return model.Token{}, "", err
	}
	if req.Name != "" {
		if err := model.ValidateTokenName(req.Name); err != nil {
			return model.Token{}, "", err
		}
	}
	if err := model.ValidateTokenLifetime(req.ExpiresIn); err != nil {
		return model.Token{}, "", err
	}
	var rnd [tokenRandBytes]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return model.Token{}, "", fmt.Errorf("create a token: crypto/rand: %w", err)
	}
	randPart := base64.RawURLEncoding.EncodeToString(rnd[:])
	var tok model.Token
	var secret string
	err := a.update(ctx, func(tx *store.Tx) error {
		if _, err := getAccount(tx, req.AccountID); err != nil {
			return err
		}
		now := a.clock.Now()
		if req.Name != "" {
			ts, err := tx.TokensOfAccount(req.AccountID)
			if err != nil {
				return err
			}
			for _, o := range ts {
				if tokenLive(o, now) && strings.EqualFold(o.Name, req.Name) {
					return conflictf("%s already has a live token named %q (%s); revoke it with `superjolt account token revoke %s` or choose another name", req.AccountID, o.Name, o.ID, o.ID)
				}
			}
		}
		id, err := tx.NewID(model.KindToken)
		if err != nil {
			return err
		}
		secret = tokenPrefix + id + "_" + randPart
		sum := sha256.Sum256([]byte(secret))
		tok = model.Token{ID: id, AccountID: req.AccountID, Name: cmp.Or(req.Name, id), ReadOnly: req.ReadOnly, CreatedAt: now, Hash: sum[:]}
		if req.ExpiresIn > 0 {
			tok.ExpiresAt = now.Add(req.ExpiresIn)
		}
		if err := tx.PutToken(tok); err != nil {
			return err
		}
		expiry := "does not expire"
		if !tok.ExpiresAt.IsZero() {
			expiry = "expires " + tok.ExpiresAt.UTC().Format(time.RFC3339)
		}
		return event(tx, now, "token.created", id, req.AccountID, "token %q (%s) of %s created: %s, %s", tok.Name, id, req.AccountID, tokenScope(tok), expiry)
	})
	if err != nil {
		return model.Token{}, "", categorised(err, "create the token")
	}
	a.log.Info("token created", "account", tok.AccountID, "token", tok.ID, "read_only", tok.ReadOnly)
	tok.Hash = nil
	return tok, secret, nil
}

// Tokens lists an account's tokens, revoked and expired ones included,
// newest first.
func (a *Appliance) Tokens(ctx context.Context, accountID string) ([]model.Token, error) {
	if err := model.ValidateID(model.KindAccount, accountID); err != nil {
		return nil, err
	}
	var out []model.Token
	err := a.view(ctx, func(tx *store.Tx) error {
		if _, err := getAccount(tx, accountID); err != nil {
			return err
		}
		var err error
		out, err = tx.TokensOfAccount(accountID)
		return err
	})
	if err != nil {
		return nil, categorised(err, "list the tokens")
	}
	slices.SortFunc(out, func(x, y model.Token) int {
		return cmp.Or(y.CreatedAt.Compare(x.CreatedAt), strings.Compare(y.ID, x.ID))
	})
	for i := range out {
		out[i].Hash = nil
	}
	return out, nil
}

// RevokeToken revokes a token: it never authenticates again. Revoking a
// revoked token answers it as it is (idempotent), with no second event.
func (a *Appliance) RevokeToken(ctx context.Context, id string) (model.Token, error) {
	if err := model.ValidateID(model.KindToken, id); err != nil {
		return model.Token{}, err
	}
	var tok model.Token
	revoked := false
	err := a.update(ctx, func(tx *store.Tx) error {
		var err error
		tok, err = tx.Token(id)
		if err != nil {
			return notFoundIs(err, "token %s does not exist; `superjolt account token list ACCOUNT` shows an account's tokens", id)
		}
		if revoked = tok.RevokedAt.IsZero(); !revoked {
			return nil
		}
		now := a.clock.Now()
		tok.RevokedAt = now
		if err := tx.PutToken(tok); err != nil {
			return err
		}
		return event(tx, now, "token.revoked", id, tok.AccountID, "token %q (%s) of %s revoked", tok.Name, id, tok.AccountID)
	})
	if err != nil {
		return model.Token{}, categorised(err, "revoke the token")
	}
	if revoked {
		a.log.Info("token revoked", "account", tok.AccountID, "token", id)
	}
	tok.Hash = nil
	return tok, nil
}

// errBadToken is what Authenticate answers for a well-formed secret that
// does not authenticate, whatever the reason.
var errBadToken = fmt.Errorf("%w: unknown, revoked or expired token; ask the operator for a new one", model.ErrUnauthenticated)

// Authenticate returns the Principal a token's secret acts for. A secret
// that is not of the form CreateToken makes is "malformed"; one that is
// unknown, revoked, expired (on the appliance's clock), whose hash does not
// match, or whose account no longer exists gets one message for all. Both
// wrap model.ErrUnauthenticated.
func (a *Appliance) Authenticate(ctx context.Context, secret string) (model.Principal, error) {
	id, ok := parseTokenSecret(secret)
	if !ok {
		return model.Principal{}, fmt.Errorf("%w: malformed token: an account token is %d characters, sjt_<token id>_<secret>, as `superjolt account token create` printed it", model.ErrUnauthenticated, TokenSecretLen)
	}
	sum := sha256.Sum256([]byte(secret))
	now := a.clock.Now()
	var tok model.Token
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		tok, err = checkToken(tx, id, sum[:], now)
		return err
	})
	if err != nil {
		return model.Principal{}, categorised(err, "authenticate")
	}
	if last := tok.LastUsedAt; last.IsZero() || now.Sub(last) >= TokenUseGranularity {
		err := a.store.Update(ctx, func(tx *store.Tx) error {
			t, err := checkToken(tx, id, sum[:], now)
			if err != nil {
				return err
			}
			if !t.LastUsedAt.IsZero() && now.Sub(t.LastUsedAt) < TokenUseGranularity {
				return nil // another request was first
			}
			t.LastUsedAt = now
			return tx.PutToken(t)
		})
		switch {
		case errors.Is(err, model.ErrUnauthenticated): // revoked meanwhile
			return model.Principal{}, err
		case err != nil:
			// Which minute a token was last used in is worth no refused request.
			a.log.Warn("token: record its last use", "token", id, "err", err)
		}
	}
	return model.Principal{AccountID: tok.AccountID, TokenID: tok.ID, TokenName: tok.Name, ReadOnly: tok.ReadOnly}, nil
}

// checkToken reads token id and checks that sum is its hash and that it
// may act at now: not revoked, not expired, its account still there.
func checkToken(tx *store.Tx, id string, sum []byte, now time.Time) (model.Token, error) {
	tok, err := tx.Token(id)
	switch {
	case errors.Is(err, model.ErrNotFound):
		// Compare anyway, so that an unknown id costs what a known one does.
		subtle.ConstantTimeCompare(sum, make([]byte, sha256.Size))
		return model.Token{}, errBadToken
	case err != nil:
		return model.Token{}, err
	}
	if subtle.ConstantTimeCompare(tok.Hash, sum) != 1 || !tokenLive(tok, now) {
		return model.Token{}, errBadToken
	}
	if _, err := tx.Account(tok.AccountID); errors.Is(err, model.ErrNotFound) {
		return model.Token{}, errBadToken
	} else if err != nil {
		return model.Token{}, err
	}
	return tok, nil
}

// parseTokenSecret checks that s has exactly the form CreateToken makes and
// returns the token id in it.
func parseTokenSecret(s string) (string, bool) {
	if len(s) != TokenSecretLen || !strings.HasPrefix(s, tokenPrefix) {
		return "", false
	}
	rest := s[len(tokenPrefix):]
	idLen := TokenSecretLen - len(tokenPrefix) - 1 - tokenRandLen
	id, sep, randPart := rest[:idLen], rest[idLen], rest[idLen+1:]
	if sep != '_' || model.ValidateID(model.KindToken, id) != nil {
		return "", false
	}
	for i := 0; i < len(randPart); i++ {
		if c := randPart[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", false
		}
	}
	// Strict: the unused low bits of the last character must be zero, so
	// that one secret has one spelling.
	b, err := base64.RawURLEncoding.Strict().DecodeString(randPart)
	if err != nil || len(b) != tokenRandBytes {
		return "", false
	}
	return id, true
}

// tokenLive reports whether t may authenticate at now.
func tokenLive(t model.Token, now time.Time) bool {
	return t.RevokedAt.IsZero() && (t.ExpiresAt.IsZero() || now.Before(t.ExpiresAt))
}

func tokenScope(t model.Token) string {
	if t.ReadOnly {
		return "read-only"
	}
	return "full access"
}
