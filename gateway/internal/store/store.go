// Package store is the gateway's access to PostgreSQL: users, refresh tokens,
// rooms and messages. Driver errors are translated here into the package's
// own errors (ErrNotFound, ErrNicknameTaken), so callers never see pgx codes.
//
// Writes and seq-critical reads use the primary. History reads
// (MessagesBefore, LatestMessages, HistoryAfter) may use a streaming replica
// instead, while it answers and keeps up (see WithReplica).
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNotFound is returned when the requested row does not exist.
var ErrNotFound = errors.New("not found")

// ErrNicknameTaken is returned when a user with the same nickname
// (compared case-insensitively) already exists.
var ErrNicknameTaken = errors.New("nickname taken")

// Store runs queries on a pgx pool. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	replica *replica // nil: every read uses pool
}

// New returns a Store using pool, the primary, for everything the options
// do not send elsewhere.
func New(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres: %w", err)
	}
	return nil
}

// querier is what both the pool and a transaction provide.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}
