package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"rooms/gateway/internal/store"
	"rooms/shared/testenv"
)

func TestRefreshTokens(t *testing.T) {
	db := testenv.Postgres(t)
	s := store.New(db.Pool)
	ctx := context.Background()
	u, _ := s.CreateUser(ctx, "uma", "h")
	fam := uuid.NewString()
	exp := time.Now().Add(time.Hour)
	id0, err := s.InsertRefreshToken(ctx, store.NewRefreshToken{Hash: []byte("h0"), FamilyID: fam, UserID: u.ID, ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	err = s.InRefreshTx(ctx, func(tx *store.RefreshTx) error {
		rt, err := tx.LockByHash(ctx, []byte("h0"))
		if err != nil {
			return err
		}
		if rt.ID != id0 || rt.FamilyID != fam || rt.UserID != u.ID || rt.Nickname != "uma" || rt.ParentID != 0 || !rt.UsedAt.IsZero() {
			t.Errorf("token %+v", rt)
		}
		if _, err := tx.LockByHash(ctx, []byte("nope")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown hash: %v", err)
		}
		if err := tx.MarkUsed(ctx, rt.ID, now); err != nil {
			return err
		}
		if _, err := tx.Insert(ctx, store.NewRefreshToken{Hash: []byte("h1"), FamilyID: fam, UserID: u.ID, ParentID: rt.ID, ExpiresAt: exp}); err != nil {
			return err
		}
		used, err := tx.HasUsedChild(ctx, rt.ID)
		if err != nil || used {
			t.Errorf("HasUsedChild = %v, %v", used, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A failing fn rolls back.
	boom := errors.New("boom")
	if err := s.InRefreshTx(ctx, func(tx *store.RefreshTx) error {
		if _, err := tx.RevokeFamily(ctx, fam, now); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("InRefreshTx = %v", err)
	}
	family, n, err := s.RevokeFamilyOf(ctx, []byte("h1"), now)
	if err != nil || family != fam || n != 2 {
		t.Fatalf("RevokeFamilyOf = %q %d %v (rollback lost?)", family, n, err)
	}
	if _, n, err := s.RevokeFamilyOf(ctx, []byte("h1"), now); err != nil || n != 0 {
		t.Fatalf("second revoke = %d %v", n, err)
	}
	if _, _, err := s.RevokeFamilyOf(ctx, []byte("zz"), now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
}
