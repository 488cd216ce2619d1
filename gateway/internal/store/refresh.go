package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RefreshToken is one issued refresh token, known only by the SHA-256 hash
// of its value. A login starts a family; every rotation adds a child.
type RefreshToken struct {
	ID        int64
	FamilyID  string
	UserID    int64
	Nickname  string // the owner's nickname, for the access token
	ParentID  int64  // 0 for the first token of a family
	ExpiresAt time.Time
	UsedAt    time.Time // zero while unused
	RevokedAt time.Time // zero while not revoked
}

// NewRefreshToken is a token to insert.
type NewRefreshToken struct {
	Hash      []byte
	FamilyID  string
	UserID    int64
	ParentID  int64 // 0 for none
	ExpiresAt time.Time
}

// InsertRefreshToken stores the first token of a new family.
func (s *Store) InsertRefreshToken(ctx context.Context, t NewRefreshToken) (int64, error) {
	return insertRefresh(ctx, s.pool, t)
}

func insertRefresh(ctx context.Context, q querier, t NewRefreshToken) (int64, error) {
	var parent *int64
	if t.ParentID != 0 {
		parent = &t.ParentID
	}
	var id int64
	err := q.QueryRow(ctx,
		`INSERT INTO refresh_tokens (token_hash, family_id, user_id, parent_id, expires_at)
		 VALUES ($1, $2::uuid, $3, $4, $5) RETURNING id`,
		t.Hash, t.FamilyID, t.UserID, parent, t.ExpiresAt).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("insert refresh token: %w", err)
	}
	return id, nil
}

// RefreshTx is a transaction over refresh tokens, obtained from InRefreshTx.
type RefreshTx struct {
	tx pgx.Tx
}

// InRefreshTx runs fn in a transaction, committing when fn returns nil and
// rolling back otherwise.
func (s *Store) InRefreshTx(ctx context.Context, fn func(tx *RefreshTx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	if err := fn(&RefreshTx{tx: tx}); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// LockByHash finds the token with the given hash and locks every token of
// its family (FOR UPDATE, in id order so concurrent lockers never deadlock),
// so that two concurrent refreshes of one login are serialized. It returns
// ErrNotFound for an unknown hash. The token is read after the lock is held,
// so it reflects what a transaction that held the lock before committed.
func (t *RefreshTx) LockByHash(ctx context.Context, hash []byte) (RefreshToken, error) {
	var family string
	err := t.tx.QueryRow(ctx, `SELECT family_id::text FROM refresh_tokens WHERE token_hash = $1`, hash).Scan(&family)
	if errors.Is(err, pgx.ErrNoRows) {
		return RefreshToken{}, ErrNotFound
	}
	if err != nil {
		return RefreshToken{}, fmt.Errorf("select refresh family: %w", err)
	}
	if _, err := t.tx.Exec(ctx,
		`SELECT id FROM refresh_tokens WHERE family_id = $1::uuid ORDER BY id FOR UPDATE`, family); err != nil {
		return RefreshToken{}, fmt.Errorf("lock refresh family: %w", err)
	}
	var (
		rt            RefreshToken
		parent        *int64
		used, revoked *time.Time
	)
	err = t.tx.QueryRow(ctx,
		`SELECT r.id, r.family_id::text, r.user_id, u.nickname, r.parent_id, r.expires_at, r.used_at, r.revoked_at
		 FROM refresh_tokens r JOIN users u ON u.id = r.user_id
		 WHERE r.token_hash = $1`, hash).
		Scan(&rt.ID, &rt.FamilyID, &rt.UserID, &rt.Nickname, &parent, &rt.ExpiresAt, &used, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return RefreshToken{}, ErrNotFound
	}
	if err != nil {
		return RefreshToken{}, fmt.Errorf("select refresh token: %w", err)
	}
	if parent != nil {
		rt.ParentID = *parent
	}
	if used != nil {
		rt.UsedAt = *used
	}
	if revoked != nil {
		rt.RevokedAt = *revoked
	}
	return rt, nil
}

// HasUsedChild reports whether a token issued by rotating id has itself
// been used.
func (t *RefreshTx) HasUsedChild(ctx context.Context, id int64) (bool, error) {
	var used bool
	err := t.tx.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM refresh_tokens WHERE parent_id = $1 AND used_at IS NOT NULL)`, id).Scan(&used)
	if err != nil {
		return false, fmt.Errorf("select used child: %w", err)
	}
	return used, nil
}

// MarkUsed records that token id was rotated at at, if it was not already.
func (t *RefreshTx) MarkUsed(ctx context.Context, id int64, at time.Time) error {
	if _, err := t.tx.Exec(ctx,
		`UPDATE refresh_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL`, id, at); err != nil {
		return fmt.Errorf("mark refresh token used: %w", err)
	}
	return nil
}

// RevokeUnusedChildren revokes the still unused tokens issued by rotating
// parentID, so that only the newest pair of a grace re-issue stays valid.
func (t *RefreshTx) RevokeUnusedChildren(ctx context.Context, parentID int64, at time.Time) error {
	if _, err := t.tx.Exec(ctx,
		`UPDATE refresh_tokens SET revoked_at = $2
		 WHERE parent_id = $1 AND used_at IS NULL AND revoked_at IS NULL`, parentID, at); err != nil {
		return fmt.Errorf("revoke superseded refresh tokens: %w", err)
	}
	return nil
}

// Insert stores a rotated token.
func (t *RefreshTx) Insert(ctx context.Context, nt NewRefreshToken) (int64, error) {
	return insertRefresh(ctx, t.tx, nt)
}

// RevokeFamily revokes every not yet revoked token of familyID and returns
// how many it revoked.
func (t *RefreshTx) RevokeFamily(ctx context.Context, familyID string, at time.Time) (int64, error) {
	return revokeFamily(ctx, t.tx, familyID, at)
}

func revokeFamily(ctx context.Context, q querier, familyID string, at time.Time) (int64, error) {
	tag, err := q.Exec(ctx,
		`UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1::uuid AND revoked_at IS NULL`, familyID, at)
	if err != nil {
		return 0, fmt.Errorf("revoke refresh family: %w", err)
	}
	return tag.RowsAffected(), nil
}

// RevokeFamilyOf revokes the whole family of the token with the given hash.
// It returns the family id and how many tokens it revoked (0 when the family
// was already revoked), or ErrNotFound for an unknown hash.
func (s *Store) RevokeFamilyOf(ctx context.Context, hash []byte, at time.Time) (string, int64, error) {
	var family string
	err := s.pool.QueryRow(ctx, `SELECT family_id::text FROM refresh_tokens WHERE token_hash = $1`, hash).Scan(&family)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, ErrNotFound
	}
	if err != nil {
		return "", 0, fmt.Errorf("select refresh family: %w", err)
	}
	n, err := revokeFamily(ctx, s.pool, family, at)
	if err != nil {
		return "", 0, err
	}
	return family, n, nil
}
