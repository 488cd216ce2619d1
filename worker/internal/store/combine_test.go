package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"rooms/shared/testenv"
	"rooms/worker/internal/store"
)

// TestCombinerSplitsOneTransactionBetweenCallers queues batches of several
// partitions while a first batch is held up by a room lock, then checks
// that they were stored in one further transaction and that each caller got
// back exactly the part answering its own records.
func TestCombinerSplitsOneTransactionBetweenCallers(t *testing.T) {
	f := newFixture(t, 2, 5)
	ctx := context.Background()
	var commits atomic.Int64
	s := store.New(f.pool, store.Options{OnCommit: func(time.Duration) { commits.Add(1) }})
	c := store.NewCombiner(s, 0, 0)

	// Hold room 0's row lock so the first round waits on it.
	lock := f.lockRoom(t, f.rooms[0])

	type outcome struct {
		res store.Result
		err error
	}
	results := make([]outcome, 5)
	var wg sync.WaitGroup
	save := func(i int, recs []store.Record) {
		defer wg.Done()
		res, err := c.Save(ctx, recs)
		results[i] = outcome{res, err}
	}
	batch := func(room int64, n int, withDup bool) []store.Record {
		var recs []store.Record
		for j := range n {
			recs = append(recs, f.rec(t, newUUID(), room, f.users[j%2], fmt.Sprint("m", j), fmt.Sprintf("r%d-%d", room, j)))
		}
		if withDup { // a repeat of the first record: stored once
			recs = append(recs, recs[0])
		}
		return recs
	}
	wg.Add(1)
	go save(0, batch(f.rooms[0], 2, false))
	f.waitForLockWait(t)
	// A poison record among them is dead-lettered by the combined write.
	poison := f.raw([]byte("x"), []byte("not json"))
	for i := 1; i < 5; i++ {
		recs := batch(f.rooms[i], i, i == 2)
		if i == 3 {
			recs = append(recs, poison)
		}
		wg.Add(1)
		go save(i, recs)
	}
	testenv.Eventually(t, "the other batches to queue", func() bool { return c.Queued() == 4 })
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	if n := commits.Load(); n != 2 {
		t.Errorf("transactions committed: %d, want 2 (the held batch, then the four queued ones together)", n)
	}
	for i, o := range results {
		if o.err != nil {
			t.Fatalf("caller %d: %v", i, o.err)
		}
		want := i // caller i sent i records (caller 2 one more, a repeat)
		if i == 0 {
			want = 2
		}
		if got := len(o.res.Messages); got != want {
			t.Errorf("caller %d: %d messages (%v), want %d", i, got, seqsOf(o.res.Messages), want)
		}
		if o.res.Inserted != want {
			t.Errorf("caller %d: inserted %d, want %d", i, o.res.Inserted, want)
		}
		for j, m := range o.res.Messages {
			if m.RoomID != fmt.Sprint(f.rooms[i]) || m.Seq != int64(j+1) {
				t.Errorf("caller %d: message %d is %s:%d, want %d:%d", i, j, m.RoomID, m.Seq, f.rooms[i], j+1)
			}
		}
		wantDead := 0
		if i == 3 {
			wantDead = 1
		}
		if o.res.DeadLetters != wantDead {
			t.Errorf("caller %d: %d dead letters, want %d", i, o.res.DeadLetters, wantDead)
		}
	}
	if n := len(f.deadLetters(t)); n != 1 {
		t.Errorf("dead letters stored: %d, want 1", n)
	}
}

// TestCombinerFallsBackToEachCaller makes a combined transaction fail (a
// trigger rejects one caller's content) and checks that the other callers
// are stored by their own retries and the failing record ends up in
// dead_letters, as without the Combiner.
func TestCombinerFallsBackToEachCaller(t *testing.T) {
	f := newFixture(t, 1, 3)
	ctx := context.Background()
	f.rejectBoom(t)
	var mu sync.Mutex
	var combined []string // the failed combined tries, reported as try 0
	s := store.New(f.pool, store.Options{MaxAttempts: 2, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		OnRetry: func(err error, transient bool, try int) {
			if try == 0 {
				mu.Lock()
				combined = append(combined, fmt.Sprintf("%v (transient %v)", err, transient))
				mu.Unlock()
			}
		}})
	c := store.NewCombiner(s, 0, 0)

	lock := f.lockRoom(t, f.rooms[0])
	var wg sync.WaitGroup
	results := make([]store.Result, 3)
	errs := make([]error, 3)
	for i, content := range []string{"first", "fine", "boom"} {
		recs := []store.Record{f.rec(t, newUUID(), f.rooms[i], f.users[0], content, "")}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = c.Save(ctx, recs)
		}()
		if i == 0 {
			f.waitForLockWait(t)
		}
	}
	testenv.Eventually(t, "the other batches to queue", func() bool { return c.Queued() == 2 })
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, want := range []struct{ msgs, dead int }{{1, 0}, {1, 0}, {0, 1}} {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if len(results[i].Messages) != want.msgs || results[i].DeadLetters != want.dead {
			t.Errorf("caller %d: %d messages and %d dead letters, want %d and %d", i, len(results[i].Messages), results[i].DeadLetters, want.msgs, want.dead)
		}
	}
	if got := f.messages(t); len(got) != 2 {
		t.Errorf("stored rows: %v, want the two fine ones", got)
	}
	if d := f.deadLetters(t); len(d) != 1 {
		t.Errorf("dead letters: %v, want the rejected record", d)
	}
	// The failed combined try is reported once, as try 0, not transient.
	mu.Lock()
	defer mu.Unlock()
	if len(combined) != 1 || !strings.Contains(combined[0], "combined transaction of 2 batches") || !strings.Contains(combined[0], "transient false") {
		t.Errorf("failed combined tries reported: %q, want one of 2 batches, not transient", combined)
	}
}

// lockRoom holds room's row lock in a transaction of its own until the
// test rolls it back.
func (f *fixture) lockRoom(t *testing.T, room int64) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, `SELECT 1 FROM rooms WHERE id = $1 FOR UPDATE`, room); err != nil {
		t.Fatal(err)
	}
	return tx
}

// waitForLockWait waits until a session of the test database waits on a
// lock (a store transaction blocked by lockRoom).
func (f *fixture) waitForLockWait(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, "a transaction to wait on the room lock", func() bool {
		var n int
		_ = f.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&n)
		return n > 0
	})
}
