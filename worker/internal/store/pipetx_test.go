package store_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"rooms/worker/internal/store"
)

// roundTrips counts what a pool sends: batches and single statements as
// pgx sees them, and writes to the socket (a pipeline goes out in one).
type roundTrips struct {
	batches, queries, writes atomic.Int64
}

// countingConn counts the writes to a connection's socket.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.batches.Add(1)
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.queries.Add(1)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *roundTrips) reset() { r.batches.Store(0); r.queries.Store(0); r.writes.Store(0) }

// tracedPool is a pool of one connection on f's database whose batches
// and statements are counted.
func tracedPool(t *testing.T, f *fixture) (*pgxpool.Pool, *roundTrips) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(f.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	store.TunePool(cfg)
	rt := &roundTrips{}
	cfg.ConnConfig.Tracer = rt
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, writes: &rt.writes}, nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, rt
}

func backendPID(t *testing.T, pool *pgxpool.Pool) uint32 {
	t.Helper()
	c, err := pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	return c.Conn().PgConn().PID()
}

// A batch of messages, with a dead letter among them, is stored in two
// pipelined round trips: BEGIN with the reads, the writes with COMMIT.
func TestBatchIsTwoRoundTrips(t *testing.T) {
	f := newFixture(t, 2, 2)
	pool, rt := tracedPool(t, f)
	st := store.New(pool, store.Options{})
	ctx := context.Background()
	// The first batch of this shape also prepares its statements (a
	// round trip of pgx's own); what follows is the steady state.
	warm := []store.Record{
		f.rec(t, newUUID(), f.rooms[0], f.users[0], "warm", "w1"),
		f.raw([]byte("1"), []byte(`{not json`)),
	}
	if _, err := st.Save(ctx, warm); err != nil {
		t.Fatal(err)
	}
	rt.reset()
	recs := []store.Record{
		f.rec(t, newUUID(), f.rooms[0], f.users[0], "a", "c1"),
		f.rec(t, newUUID(), f.rooms[1], f.users[1], "b", ""),
		f.raw([]byte("1"), []byte(`{not json`)),
		f.rec(t, newUUID(), f.rooms[1], f.users[0], "c", "c2"),
	}
	res, err := st.Save(ctx, recs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 3 || res.DeadLetters != 1 {
		t.Fatalf("inserted %d, dead letters %d; want 3 and 1", res.Inserted, res.DeadLetters)
	}
	if b, q, w := rt.batches.Load(), rt.queries.Load(), rt.writes.Load(); b != 2 || q != 0 || w != 2 {
		t.Fatalf("a batch took %d batches, %d single statements and %d socket writes; want 2, 0 and 2", b, q, w)
	}
	if got := len(f.messages(t)); got != 4 {
		t.Fatalf("%d messages stored, want 4", got)
	}
}

// A write that fails inside the pipeline (a redelivered message breaks a
// unique index on the optimistic first try) leaves its transaction rolled
// back and the connection in the pool: the retry with the look-up runs on
// the same backend and stores nothing twice.
func TestFailedWriteRollsBackAndKeepsTheConnection(t *testing.T) {
	f := newFixture(t, 1, 1)
	pool, _ := tracedPool(t, f)
	st := store.New(pool, store.Options{})
	ctx := context.Background()
	first := f.rec(t, newUUID(), f.rooms[0], f.users[0], "once", "")
	if _, err := st.Save(ctx, []store.Record{first}); err != nil {
		t.Fatal(err)
	}
	pid := backendPID(t, pool)
	again := first
	again.Offset = f.next // the same message, redelivered at a later offset
	f.next++
	res, err := st.Save(ctx, []store.Record{f.rec(t, newUUID(), f.rooms[0], f.users[0], "new", ""), again})
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 1 || len(res.Messages) != 2 {
		t.Fatalf("inserted %d, answered %d; want 1 and 2", res.Inserted, len(res.Messages))
	}
	if got := backendPID(t, pool); got != pid {
		t.Fatalf("backend %d replaced by %d: the failed transaction was not rolled back", pid, got)
	}
	ms := f.messages(t)
	if len(ms) != 2 || ms[0].seq != 1 || ms[1].seq != 2 {
		t.Fatalf("stored %v, want seqs 1 and 2", ms)
	}
	if n := f.lastSeq(t, f.rooms[0]); n != 2 {
		t.Fatalf("last_seq %d, want 2", n)
	}
}

// With BeforeCommit set (a fault test's crash point) the hook runs once
// the rows are written and before they are committed: another connection
// does not see them yet, and sees them after Save.
func TestBeforeCommitRunsBetweenTheWritesAndTheCommit(t *testing.T) {
	f := newFixture(t, 1, 1)
	ctx := context.Background()
	hooks, seenInHook := 0, -1
	st := store.New(f.pool, store.Options{BeforeCommit: func() {
		hooks++
		seenInHook = len(f.messages(t))
	}})
	res, err := st.Save(ctx, []store.Record{
		f.rec(t, newUUID(), f.rooms[0], f.users[0], "a", ""),
		f.rec(t, newUUID(), f.rooms[0], f.users[0], "b", ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	if hooks != 1 || seenInHook != 0 {
		t.Fatalf("hook ran %d times and saw %d committed messages; want once and 0", hooks, seenInHook)
	}
	if res.Inserted != 2 || len(f.messages(t)) != 2 {
		t.Fatalf("inserted %d, %d stored; want 2 and 2", res.Inserted, len(f.messages(t)))
	}
}
