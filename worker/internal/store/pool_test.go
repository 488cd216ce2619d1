package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

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
