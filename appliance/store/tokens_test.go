package store

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// TestTokens: a token's row keeps its hash (which model.Token keeps out of
// JSON) across a reopen, the account index lists an account's tokens only,
// and DeleteToken removes row and index entry.
func TestTokens(t *testing.T) {
	dir, err := os.MkdirTemp("", "sjstore")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	s := openDir(t, dir)
	hash := []byte("0123456789abcdef0123456789abcdef")
	a := model.Token{ID: "tk-aaaaaaaaaa", AccountID: "ac-aaaaaa", Name: "laptop", CreatedAt: t0, Hash: hash}
	b := model.Token{ID: "tk-bbbbbbbbbb", AccountID: "ac-aaaaaa", Name: "assistant", ReadOnly: true, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), Hash: hash}
	c := model.Token{ID: "tk-cccccccccc", AccountID: "ac-cccccc", Name: "laptop", CreatedAt: t0, Hash: hash}
	update(t, s, func(tx *Tx) error {
		for _, tk := range []model.Token{a, b, c} {
			if err := tx.PutToken(tk); err != nil {
				return err
			}
		}
		return nil
	})
	if err := s.Update(context.Background(), func(tx *Tx) error {
		return tx.PutToken(model.Token{ID: "tk-dddddddddd", AccountID: "ac-aaaaaa"})
	}); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("PutToken without a hash: %v, want invalid", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openDir(t, dir)
	defer s.Close()
	view(t, s, func(tx *Tx) error {
		got, err := tx.Token(b.ID)
		if err != nil || string(got.Hash) != string(hash) || got.Name != "assistant" || !got.ReadOnly || !got.ExpiresAt.Equal(b.ExpiresAt) {
			t.Fatalf("Token(%s) after reopen = %+v, %v", b.ID, got, err)
		}
		ts, err := tx.TokensOfAccount("ac-aaaaaa")
		if err != nil || len(ts) != 2 || ts[0].ID != a.ID || ts[1].ID != b.ID {
			t.Fatalf("TokensOfAccount = %+v, %v", ts, err)
		}
		if ts, err := tx.TokensOfAccount("ac-zzzzzz"); err != nil || len(ts) != 0 {
			t.Fatalf("TokensOfAccount(none) = %+v, %v", ts, err)
		}
		if _, err := tx.Token("tk-zzzzzzzzzz"); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("Token(unknown) = %v", err)
		}
		if _, err := tx.Token("ac-aaaaaa"); !errors.Is(err, model.ErrInvalid) {
			t.Fatalf("Token(an account id) = %v", err)
		}
		return nil
	})
	update(t, s, func(tx *Tx) error { return tx.DeleteToken(a.ID) })
	view(t, s, func(tx *Tx) error {
		ts, err := tx.TokensOfAccount("ac-aaaaaa")
		if err != nil || len(ts) != 1 || ts[0].ID != b.ID {
			t.Fatalf("TokensOfAccount after DeleteToken = %+v, %v", ts, err)
		}
		return nil
	})
}
