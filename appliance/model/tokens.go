package model

import "time"

// KindToken is the prefix of an account token's id.
const KindToken Kind = "tk"

// Token is an account token: what lets an account's people and their
// assistants reach the appliance over the network (see Principal). Only a
// hash of its secret is kept; the secret is shown once, when it is made.
type Token struct {
	ID        string `json:"id"`
	AccountID string `json:"account_id"`
	// Name says whose or what it is ("laptop", "claude"); events name it.
	Name string `json:"name"`
	// ReadOnly tokens may read and never change anything.
	ReadOnly  bool      `json:"read_only"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is zero for a token that does not expire.
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	// RevokedAt is set once the token is revoked; it then never
	// authenticates again.
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// Hash is the SHA-256 of the secret; never sent over the API.
	Hash []byte `json:"-"`
}

// Principal is who a request acts for. The operator (the UNIX socket's
// peer) is the zero Principal; a request with an account token acts for
// that token's account only.
type Principal struct {
	AccountID string
	TokenID   string
	TokenName string
	ReadOnly  bool
}

// Operator reports whether p is the operator, who may do anything.
func (p Principal) Operator() bool { return p.TokenID == "" }
