package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pipeTx is one transaction sent as pipelined batches on one pooled
// connection: BEGIN goes out with the first batch and COMMIT with the last,
// instead of each in a round trip of its own. A round trip costs the
// network's latency when PostgreSQL is on another machine, and a worker's
// partition waits for its batch before the next (change 15 in
// docs/performance.md).
//
// If a statement of a batch fails, PostgreSQL skips the rest of the batch
// (the COMMIT too) and leaves the transaction aborted; end rolls it back.
type pipeTx struct {
	conn      *pgxpool.Conn
	begun     bool // BEGIN was sent
	committed bool
}

func beginPipe(ctx context.Context, pool *pgxpool.Pool) (*pipeTx, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	return &pipeTx{conn: conn}, nil
}

// batch starts the transaction's next batch; the first one opens with
// BEGIN.
func (t *pipeTx) batch() *pgx.Batch {
	b := &pgx.Batch{}
	if !t.begun {
		b.Queue("BEGIN")
	}
	return b
}

// send sends a batch made by batch and reads the result of its BEGIN, if
// it has one; the caller reads the rest in queue order and closes it.
func (t *pipeTx) send(ctx context.Context, b *pgx.Batch) (pgx.BatchResults, error) {
	br := t.conn.SendBatch(ctx, b)
	if !t.begun {
		t.begun = true
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return nil, fmt.Errorf("begin: %w", err)
		}
	}
	return br, nil
}

// readCommit reads the COMMIT's result. A COMMIT of a transaction that
// failed reports ROLLBACK, not an error (pgx's Tx.Commit checks the same).
func (t *pipeTx) readCommit(br pgx.BatchResults) error {
	tag, err := br.Exec()
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if tag.String() != "COMMIT" {
		return fmt.Errorf("commit: %w", pgx.ErrTxCommitRollback)
	}
	t.committed = true
	return nil
}

// commitWith sends b, statements whose results are only checked for an
// error, with a COMMIT at its end; commitWith(ctx, t.batch()) is a COMMIT
// of its own.
func (t *pipeTx) commitWith(ctx context.Context, b *pgx.Batch) error {
	n := b.Len()
	if !t.begun {
		n-- // send reads the BEGIN's result
	}
	b.Queue("COMMIT")
	br, err := t.send(ctx, b)
	if err != nil {
		return err
	}
	for range n {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return err
		}
	}
	if err := t.readCommit(br); err != nil {
		_ = br.Close()
		return err
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// end rolls back a transaction that was begun and not committed, and
// returns the connection to the pool. If the rollback fails, the pool
// drops the connection: it drops any connection returned closed, busy or
// inside a transaction.
func (t *pipeTx) end(ctx context.Context) {
	if t.begun && !t.committed {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, _ = t.conn.Exec(rctx, "ROLLBACK")
		cancel()
	}
	t.conn.Release()
}
