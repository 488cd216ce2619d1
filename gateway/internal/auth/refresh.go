package auth

import (
	"context"
	"errors"
	"fmt"

	"rooms/gateway/internal/store"
)

// Refresh rotates a refresh token and returns a new pair.
//
// Rules (API.md): a token not yet used gets a child. A token already used
// may be presented again while none of its children has been used (a grace
// for lost responses): it gets a new child and the unused earlier children
// are revoked. Once a child has been used, presenting the parent again is
// reuse: the whole family is revoked (and published) and the answer is
// ErrInvalidRefresh. Unknown, expired and revoked tokens are
// ErrInvalidRefresh too.
//
// The family's rows are locked for the whole decision, so two concurrent
// refreshes of one login are serialized.
func (a *Auth) Refresh(ctx context.Context, token string) (Session, error) {
	if token == "" || len(token) > MaxTokenLen {
		return Session{}, ErrInvalidRefresh
	}
	hash := hashToken(token)
	var (
		sess    Session
		reused  string
		invalid bool
	)
	err := a.store.InRefreshTx(ctx, func(tx *store.RefreshTx) error {
		now := a.now()
		rt, err := tx.LockByHash(ctx, hash)
		if errors.Is(err, store.ErrNotFound) {
			invalid = true
			return nil
		}
		if err != nil {
			return err
		}
		if !rt.RevokedAt.IsZero() || !now.Before(rt.ExpiresAt) {
			invalid = true
			return nil
		}
		if !rt.UsedAt.IsZero() {
			used, err := tx.HasUsedChild(ctx, rt.ID)
			if err != nil {
				return err
			}
			if used {
				if _, err := tx.RevokeFamily(ctx, rt.FamilyID, now); err != nil {
					return err
				}
				reused = rt.FamilyID
				return nil
			}
			if err := tx.RevokeUnusedChildren(ctx, rt.ID, now); err != nil {
				return err
			}
		} else if err := tx.MarkUsed(ctx, rt.ID, now); err != nil {
			return err
		}
		refresh, newHash := newRefreshToken()
		if _, err := tx.Insert(ctx, store.NewRefreshToken{
			Hash: newHash, FamilyID: rt.FamilyID, UserID: rt.UserID, ParentID: rt.ID,
			ExpiresAt: now.Add(a.refreshTTL),
		}); err != nil {
			return err
		}
		sess, err = a.session(rt.UserID, rt.Nickname, rt.FamilyID, refresh, now)
		return err
	})
	if err != nil {
		return Session{}, fmt.Errorf("refresh: %w", err)
	}
	if reused != "" {
		if err := a.publishRevoked(ctx, reused); err != nil {
			return Session{}, fmt.Errorf("refresh: %w", err)
		}
		return Session{}, ErrInvalidRefresh
	}
	if invalid {
		return Session{}, ErrInvalidRefresh
	}
	return sess, nil
}

// Logout revokes the family of token. An unknown or already revoked token
// is not an error.
func (a *Auth) Logout(ctx context.Context, token string) error {
	if token == "" || len(token) > MaxTokenLen {
		return nil
	}
	family, n, err := a.store.RevokeFamilyOf(ctx, hashToken(token), a.now())
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	if n > 0 {
		if err := a.publishRevoked(ctx, family); err != nil {
			return fmt.Errorf("logout: %w", err)
		}
	}
	return nil
}

func (a *Auth) publishRevoked(ctx context.Context, family string) error {
	if err := a.rdb.Publish(ctx, RevokedChannel(a.prefix), family).Err(); err != nil {
		return fmt.Errorf("publish revoked family: %w", err)
	}
	return nil
}
