package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"rooms/shared/config"
	"rooms/shared/testenv"
	"rooms/worker/internal/store"
)

// TestLookupsStayOnIndexesAsTheTableGrows reproduces how a long-lived
// worker connection meets a table that was nearly empty when its
// statements were prepared (and is never ANALYZEd, as with autovacuum
// off): batches saved through a pool set up by TunePool must not scan the
// messages table once it is large, nor the users table in the inserts'
// foreign-key checks (which run with cached plans).
func TestLookupsStayOnIndexesAsTheTableGrows(t *testing.T) {
	f := newFixture(t, 3, 3)
	ctx := context.Background()
	db := f.pool.Config().ConnConfig.Database
	cfg, err := pgxpool.ParseConfig(f.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1 // one backend, so its prepared statements are reused
	store.TunePool(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := store.New(pool, store.Options{})

	saved := 0
	save := func(n int) {
		for i := range n {
			recs := []store.Record{
				f.rec(t, newUUID(), f.rooms[0], f.users[0], "a", fmt.Sprintf("c%d", saved)),
				f.rec(t, newUUID(), f.rooms[1], f.users[1], "b", fmt.Sprintf("d%d", saved)),
			}
			if _, err := s.Save(ctx, recs); err != nil {
				t.Fatalf("batch %d: %v", i, err)
			}
			saved++
		}
	}
	// Enough executions on a nearly empty table for PostgreSQL to consider
	// generic plans.
	save(12)

	const bulk = 20000
	if _, err := f.pool.Exec(ctx, `
		INSERT INTO messages (room_id, seq, id, user_id, nickname, content, client_msg_id, time_created)
		SELECT $1, g, gen_random_uuid(), $2, 'n', 'bulk', 'bulk' || g, now() FROM generate_series(1, $3::int) g`,
		f.rooms[2], f.users[2], bulk); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `UPDATE rooms SET last_seq = $2 WHERE id = $1`, f.rooms[2], bulk); err != nil {
		t.Fatal(err)
	}
	// The users table grows too: the foreign-key checks of the inserts
	// must not scan it.
	if _, err := f.pool.Exec(ctx, `
		INSERT INTO users (nickname, password_hash)
		SELECT 'bulk_' || g, 'x' FROM generate_series(1, $1::int) g`, bulk); err != nil {
		t.Fatal(err)
	}
	// Later batches come from the newest user, at the end of the heap, so a
	// scan for it reads the whole table.
	if err := f.pool.QueryRow(ctx, `SELECT max(id) FROM users`).Scan(&f.users[1]); err != nil {
		t.Fatal(err)
	}
	save(5)
	pool.Close() // the backend reports its table statistics as it exits

	// Wait for the worker backend's statistics: every row it inserted shows.
	want := int64(bulk + 2*saved)
	var inserted, scanned, usersScanned int64
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := f.pool.QueryRow(ctx, `SELECT n_tup_ins, seq_tup_read FROM pg_stat_user_tables WHERE relname = 'messages'`).
			Scan(&inserted, &scanned); err != nil {
			t.Fatal(err)
		}
		if inserted >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statistics of database %s show %d inserted rows of messages, want %d", db, inserted, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := f.pool.QueryRow(ctx, `SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'users'`).
		Scan(&usersScanned); err != nil {
		t.Fatal(err)
	}
	if usersScanned >= bulk {
		t.Fatalf("saving batches read %d rows of users sequentially: a foreign-key check scanned the table (%d rows)", usersScanned, bulk)
	}
	if scanned >= bulk {
		t.Fatalf("saving batches read %d rows of messages sequentially: a duplicate look-up scanned the table (%d rows)", scanned, bulk)
	}
	t.Logf("sequentially read rows of messages: %d, of users: %d", scanned, usersScanned)
}

// TestStalledTransactionFreesItsRooms stalls a batch's transaction after its
// writes, holding its room's row lock, as a worker frozen or cut off between
// its two round trips would: the session timeout TunePool sets ends that
// session, so a second store (the partition's next owner) stores its own
// batch of the room; the stalled store, let go, retries and stores its batch
// once, after it, with no seq lost or doubled. The timeout is set short
// through the connection string, which TunePool must keep.
func TestStalledTransactionFreesItsRooms(t *testing.T) {
	f := newFixture(t, 2, 1)
	ctx := context.Background()
	room := f.rooms[0]

	// The default.
	cfg, err := pgxpool.ParseConfig(f.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	store.TunePool(cfg)
	if got := cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; got != config.IdleInTransactionTimeout {
		t.Fatalf("TunePool set idle_in_transaction_session_timeout %q, want %q", got, config.IdleInTransactionTimeout)
	}
	plain, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var shown string
	if err := plain.QueryRow(ctx, `SHOW idle_in_transaction_session_timeout`).Scan(&shown); err != nil {
		t.Fatal(err)
	}
	if shown != config.IdleInTransactionTimeout {
		t.Fatalf("a tuned session shows idle_in_transaction_session_timeout %q, want %q", shown, config.IdleInTransactionTimeout)
	}

	// A short timeout from the connection string.
	cs := f.pool.Config().ConnString()
	sep := "?"
	if strings.Contains(cs, "?") {
		sep = "&"
	}
	short, err := pgxpool.ParseConfig(cs + sep + "idle_in_transaction_session_timeout=300ms")
	if err != nil {
		t.Fatal(err)
	}
	store.TunePool(short)
	stalledPool, err := pgxpool.NewWithConfig(ctx, short)
	if err != nil {
		t.Fatal(err)
	}
	defer stalledPool.Close()

	stalled := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var retries []string
	st := store.New(stalledPool, store.Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		OnRetry: func(err error, transient bool, try int) {
			mu.Lock()
			defer mu.Unlock()
			retries = append(retries, fmt.Sprintf("try %d (transient %v): %v", try, transient, err))
			if !transient {
				t.Errorf("the stalled store's try %d failed with an error not taken as transient: %v", try, err)
			}
		},
		BeforeCommit: func() {
			once.Do(func() { close(stalled); <-release })
		}})
	type saved struct {
		res store.Result
		err error
	}
	first := make(chan saved, 1)
	go func() {
		res, err := st.Save(ctx, []store.Record{f.rec(t, newUUID(), room, f.users[0], "stalled", "s-1")})
		first <- saved{res, err}
	}()
	select {
	case <-stalled:
	case r := <-first:
		t.Fatalf("the first store finished without reaching its commit: %+v", r)
	case <-time.After(30 * time.Second):
		t.Fatal("the first store did not reach its commit within 30s")
	}

	// The room's row is locked by the stalled transaction; the next owner
	// gets it once the server has ended that session.
	next := store.New(plain, store.Options{})
	// Well under the 10 s default, so a TunePool that overrode the
	// connection string's timeout fails here.
	sctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	res, err := next.Save(sctx, []store.Record{f.rec(t, newUUID(), room, f.users[1], "next owner", "n-1")})
	cancel()
	close(release)
	if err != nil {
		t.Fatalf("the next owner's batch was not stored while the first store was stalled: %v", err)
	}
	if len(res.Messages) != 1 || res.Messages[0].Seq != 1 {
		t.Fatalf("the next owner stored %+v, want its message at seq 1", res.Messages)
	}

	r := <-first
	if r.err != nil {
		t.Fatalf("the stalled store, let go: %v", r.err)
	}
	if len(r.res.Messages) != 1 || r.res.Messages[0].Seq != 2 {
		t.Fatalf("the stalled store, let go, stored %+v, want its message at seq 2", r.res.Messages)
	}
	mu.Lock()
	if len(retries) == 0 {
		t.Error("the stalled store committed without a retry: its session was not ended")
	}
	t.Logf("the stalled store's retries: %q", retries)
	mu.Unlock()
	var n, last, maxSeq int64
	if err := f.pool.QueryRow(ctx, `SELECT count(*), coalesce(max(seq), 0) FROM messages WHERE room_id = $1`, room).Scan(&n, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if err := f.pool.QueryRow(ctx, `SELECT last_seq FROM rooms WHERE id = $1`, room).Scan(&last); err != nil {
		t.Fatal(err)
	}
	if n != 2 || maxSeq != 2 || last != 2 {
		t.Fatalf("room holds %d messages up to seq %d, last_seq %d; want 2, 2, 2", n, maxSeq, last)
	}
}

// TestHungTryIsAbandonedAndRetried freezes a private PostgreSQL server
// (SIGSTOP to the postmaster and every backend: the connections stay open
// and nothing answers, as with a server cut off without a reset) while a
// batch is being stored. With TryTimeout each hung try is abandoned and
// retried as a transient error, on a new connection, until the server
// answers again; then the batch is stored once. Without it the try would
// wait on its connection for as long as the kernel keeps it.
func TestHungTryIsAbandonedAndRetried(t *testing.T) {
	srv := testenv.StartPGServer(t)
	f := fixtureOn(t, srv.Database(), 1, 1)
	ctx := context.Background()
	var mu sync.Mutex
	var retries []string
	transient := 0
	st := store.New(f.pool, store.Options{TryTimeout: 300 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnRetry: func(err error, tr bool, try int) {
			mu.Lock()
			defer mu.Unlock()
			retries = append(retries, fmt.Sprintf("try %d (transient %v): %v", try, tr, err))
			if tr {
				transient++
			}
		}})
	if _, err := st.Save(ctx, []store.Record{f.rec(t, newUUID(), f.rooms[0], f.users[0], "before", "b-1")}); err != nil {
		t.Fatal(err)
	}

	thaw := srv.Freeze(t)
	type saved struct {
		res store.Result
		err error
	}
	done := make(chan saved, 1)
	rec := f.rec(t, newUUID(), f.rooms[0], f.users[0], "while frozen", "w-1")
	go func() {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		res, err := st.Save(sctx, []store.Record{rec})
		done <- saved{res, err}
	}()
	testenv.WaitFor(t, "three hung tries abandoned while the server is frozen", 30*time.Second, nil, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return transient >= 3
	})
	select {
	case r := <-done:
		t.Fatalf("the batch finished while the server was frozen: %+v", r)
	default:
	}
	thaw()
	var r saved
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the batch was not stored within a minute of the server answering again")
	}
	if r.err != nil {
		t.Fatalf("after the server answered again: %v", r.err)
	}
	if len(r.res.Messages) != 1 || r.res.Messages[0].Seq != 2 {
		t.Fatalf("stored %+v, want the message at seq 2", r.res.Messages)
	}
	if got := f.messages(t); len(got) != 2 {
		t.Fatalf("stored rows %v, want 2", got)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range retries {
		if !strings.Contains(s, "transient true") {
			t.Errorf("a try failed with an error not taken as transient: %s", s)
		}
	}
	t.Logf("%d tries abandoned while frozen; first: %s", len(retries), retries[0])
}
