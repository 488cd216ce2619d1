package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"rooms/shared/message"
)

// ReplicaOptions tunes the read replica; zero values mean the defaults in
// brackets.
type ReplicaOptions struct {
	// MaxLag is the largest replication lag at which history reads still
	// go to the replica [1s].
	MaxLag time.Duration
	// Interval is the time between two health checks in RunReplicaChecks
	// [1s].
	Interval time.Duration
	// Timeout bounds one health check and one query on the replica; a
	// query that takes longer is run again on the primary [2s].
	Timeout time.Duration
	// Logger gets one line each time the replica turns healthy or
	// unhealthy [discarded].
	Logger *slog.Logger
}

// Option configures a Store built by New.
type Option func(*Store)

// WithReplica makes the history reads (MessagesBefore, LatestMessages,
// HistoryAfter) use pool, a hot standby streaming from the primary, while it
// is healthy: it passed its last health check (CheckReplica: it answers, is
// in recovery, and lags at most MaxLag) and no query on it has failed since.
// It starts unhealthy; RunReplicaChecks (or CheckReplica) makes it healthy.
// A failed query on the replica marks it unhealthy and is run again on the
// primary, so the caller sees no error.
//
// Every other read stays on the primary: rooms and their last_seq, users,
// refresh tokens and MessagesAfter, which resume replay and gap repair use.
func WithReplica(pool *pgxpool.Pool, opt ReplicaOptions) Option {
	if opt.MaxLag <= 0 {
		opt.MaxLag = time.Second
	}
	if opt.Interval <= 0 {
		opt.Interval = time.Second
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 2 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	return func(s *Store) { s.replica = &replica{pool: pool, opt: opt} }
}

// Health states of a replica.
const (
	replicaUnknown int32 = iota // not checked yet
	replicaHealthy
	replicaUnhealthy
)

type replica struct {
	pool  *pgxpool.Pool
	opt   ReplicaOptions
	state atomic.Int32
}

func (r *replica) healthy() bool { return r.state.Load() == replicaHealthy }

// set records the outcome of a check or a query and logs a change of state.
// A concurrent check and failed query may race; the next check settles it.
func (r *replica) set(healthy bool, reason string, err error) {
	state := replicaUnhealthy
	if healthy {
		state = replicaHealthy
	}
	if old := r.state.Swap(state); old == state {
		return
	}
	if healthy {
		r.opt.Logger.Info("postgres replica healthy: history reads use it")
		return
	}
	r.opt.Logger.Warn("postgres replica unhealthy: history reads use the primary", "reason", reason, "error", err)
}

// ErrNoReplica is returned by CheckReplica when the Store has no replica.
var ErrNoReplica = errors.New("no replica configured")

// ErrReplicaLagging is wrapped by the error of CheckReplica when the
// replica is further behind the primary than ReplicaOptions.MaxLag, or
// behind it by an unknown time.
var ErrReplicaLagging = errors.New("replica lagging")

// ReplicaHealthy reports whether history reads use the replica now.
func (s *Store) ReplicaHealthy() bool {
	return s.replica != nil && s.replica.healthy()
}

// CheckReplica checks the replica once and marks it healthy or not. It
// returns the lag it measured; the error tells why the replica is unhealthy
// (ErrReplicaLagging for lag). A check cut short by ctx changes nothing.
func (s *Store) CheckReplica(ctx context.Context) (time.Duration, error) {
	r := s.replica
	if r == nil {
		return 0, ErrNoReplica
	}
	cctx, cancel := context.WithTimeout(ctx, r.opt.Timeout)
	defer cancel()
	lag, err := s.replicaLag(cctx)
	switch {
	case err != nil && ctx.Err() != nil:
		return lag, err
	case err != nil:
		r.set(false, "check failed", err)
	case lag > r.opt.MaxLag:
		err = fmt.Errorf("%w: %s behind the primary, more than %s", ErrReplicaLagging, lag, r.opt.MaxLag)
		r.set(false, "lagging", err)
	default:
		r.set(true, "", nil)
	}
	return lag, err
}

// replicaLag measures how far the replica is behind the primary. When the
// replica has replayed all the WAL the primary had written at the start of
// the check, the lag is zero. Otherwise it is the time, on the primary's
// clock, since the commit of the last transaction the replica replayed:
// never less than the true lag (the oldest commit the replica lacks is
// younger), and much more right after a long idle period, which only sends
// reads to the primary until the next check.
func (s *Store) replicaLag(ctx context.Context) (time.Duration, error) {
	var (
		lsn string
		now time.Time
	)
	// The primary first: whatever it had written then, a caught-up
	// replica has replayed by the time it answers below.
	if err := s.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, clock_timestamp()`).Scan(&lsn, &now); err != nil {
		return 0, fmt.Errorf("primary wal position: %w", err)
	}
	var (
		inRecovery, caughtUp bool
		replayed             *time.Time
	)
	err := s.replica.pool.QueryRow(ctx, `SELECT pg_is_in_recovery(),
		coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false), pg_last_xact_replay_timestamp()`, lsn).
		Scan(&inRecovery, &caughtUp, &replayed)
	switch {
	case err != nil:
		return 0, fmt.Errorf("replica replay position: %w", err)
	case !inRecovery:
		// Promoted, or not a standby at all: it no longer follows the
		// primary, so its data may be anything.
		return 0, errors.New("replica is not in recovery (not a standby of the primary)")
	case caughtUp:
		return 0, nil
	case replayed == nil:
		return 0, fmt.Errorf("%w: behind the primary by an unknown time (no transaction replayed since it started)", ErrReplicaLagging)
	}
	return max(now.Sub(*replayed), 0), nil
}

// RunReplicaChecks checks the replica at once and then every
// ReplicaOptions.Interval until ctx is cancelled, then returns nil. Without
// a replica it returns nil at once. Run it in the background for the life
// of the Store.
func (s *Store) RunReplicaChecks(ctx context.Context) error {
	if s.replica == nil {
		return nil
	}
	t := time.NewTicker(s.replica.opt.Interval)
	defer t.Stop()
	for {
		_, _ = s.CheckReplica(ctx) // the outcome is logged when it changes
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// HistoryAfter is MessagesAfter for history: it reads the replica while that
// is healthy, so it may miss messages stored within the last MaxLag.
func (s *Store) HistoryAfter(ctx context.Context, roomID, afterSeq int64, limit int) ([]message.Message, error) {
	return s.history(ctx, afterSQL, false, roomID, afterSeq, limit)
}

// history runs a messages query on the replica when it is healthy, and on
// the primary when it is not or when the query fails there.
func (s *Store) history(ctx context.Context, sql string, reverse bool, args ...any) ([]message.Message, error) {
	if msgs, err := s.onReplica(ctx, sql, reverse, args...); err == nil {
		return msgs, nil
	}
	return s.messages(ctx, sql, reverse, args...)
}

// errReplicaSkipped means the replica was not asked (none, or unhealthy).
var errReplicaSkipped = errors.New("replica not used")

// onReplica runs a messages query on the replica if it is healthy, within
// ReplicaOptions.Timeout. A failure that is not the caller giving up marks
// the replica unhealthy.
func (s *Store) onReplica(ctx context.Context, sql string, reverse bool, args ...any) ([]message.Message, error) {
	r := s.replica
	if r == nil || !r.healthy() {
		return nil, errReplicaSkipped
	}
	qctx, cancel := context.WithTimeout(ctx, r.opt.Timeout)
	defer cancel()
	msgs, err := queryMessages(qctx, r.pool, sql, reverse, args...)
	if err != nil && ctx.Err() == nil {
		r.set(false, "query failed", err)
	}
	return msgs, err
}

// withTip completes msgs, the newest limit messages of roomID on the
// replica (ascending), with the primary's tip: the messages newer than the
// replica's newest, found by an index probe that returns nothing when the
// replica is caught up. The primary has every seq the replica has, so the
// result is the newest limit messages as of the primary read.
//
// LatestMessages serves the legacy first frame: a first frame without the
// newest messages would hold them back until the next live message
// triggers the connection's gap repair, so the tip always comes from the
// primary.
func (s *Store) withTip(ctx context.Context, msgs []message.Message, roomID int64, limit int) ([]message.Message, error) {
	var top int64
	if n := len(msgs); n > 0 {
		top = msgs[n-1].Seq
	}
	tip, err := s.messages(ctx, `SELECT `+messageColumns+` FROM messages
		WHERE room_id = $1 AND seq > $2 ORDER BY seq DESC LIMIT $3`, true, roomID, top, limit)
	if err != nil {
		return nil, err
	}
	msgs = append(msgs, tip...)
	return msgs[max(len(msgs)-limit, 0):], nil
}
