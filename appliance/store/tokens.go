package store

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/superjolt/superjolt/appliance/model"
)

// Token returns the account token with id. Its row holds the SHA-256 of
// the secret, never the secret.
func (tx *Tx) Token(id string) (model.Token, error) {
	var t model.Token
	if err := model.ValidateID(model.KindToken, id); err != nil {
		return t, err
	}
	var row tokenRow
	if err := tx.get(tokenKey(id), "token "+id, &row); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return t, notFound("token", id, "`superjolt account token list ACCOUNT` shows an account's tokens")
		}
		return t, err
	}
	return row.token(), nil
}

// PutToken creates or replaces a token and keeps its account index entry
// in step with it.
func (tx *Tx) PutToken(t model.Token) error {
	if err := model.ValidateID(model.KindToken, t.ID); err != nil {
		return err
	}
	if err := model.ValidateID(model.KindAccount, t.AccountID); err != nil {
		return fmt.Errorf("token %s: %w", t.ID, err)
	}
	if len(t.Hash) == 0 {
		return invalid("token %s has no hash of its secret", t.ID)
	}
	old, err := tx.Token(t.ID)
	isNew := errors.Is(err, model.ErrNotFound)
	if err != nil && !isNew {
		return err
	}
	if err := tx.put(tokenKey(t.ID), "token "+t.ID, newTokenRow(t)); err != nil {
		return err
	}
	if !isNew && old.AccountID == t.AccountID {
		return nil
	}
	if !isNew {
		if err := tx.del(tokenAccountKey(old.AccountID, t.ID), "token "+t.ID+" account index"); err != nil {
			return err
		}
	}
	return tx.set(tokenAccountKey(t.AccountID, t.ID), nil, "token "+t.ID+" account index")
}

// TokensOfAccount returns an account's tokens (revoked and expired ones
// included), ordered by id, from the account's index entries.
func (tx *Tx) TokensOfAccount(accountID string) ([]model.Token, error) {
	if err := model.ValidateID(model.KindAccount, accountID); err != nil {
		return nil, err
	}
	ids, err := tx.suffixes(tokenAccountPrefix(accountID))
	if err != nil {
		return nil, err
	}
	out := make([]model.Token, 0, len(ids))
	for _, id := range ids {
		t, err := tx.Token(id)
		if err != nil {
			return nil, fmt.Errorf("store: token index of %s names %s: %w", accountID, id, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// DeleteToken deletes a token's row and its index entry. Its id stays
// taken.
func (tx *Tx) DeleteToken(id string) error {
	t, err := tx.Token(id)
	if err != nil {
		return err
	}
	if err := tx.del(tokenAccountKey(t.AccountID, id), "token "+id+" account index"); err != nil {
		return err
	}
	return tx.del(tokenKey(id), "token "+id)
}

// tokenRow is a Token as stored: model.Token keeps its Hash out of JSON
// (it must never reach the API), so the row carries it in a field of its
// own.
type tokenRow struct {
	model.Token
	Hash []byte `json:"hash"`
}

func newTokenRow(t model.Token) tokenRow { return tokenRow{Token: t, Hash: t.Hash} }

func (r tokenRow) token() model.Token {
	t := r.Token
	t.Hash = r.Hash
	return t
}
