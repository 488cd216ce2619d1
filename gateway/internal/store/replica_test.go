package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"rooms/gateway/internal/store"
	"rooms/shared/message"
	"rooms/shared/testenv"
)

// cluster is a private primary and a streaming replica cloned from it with
// pg_basebackup, each in a temporary folder on a spare loopback port. The
// machine's shared server is never touched.
type cluster struct {
	t                        *testing.T
	dir                      string
	primaryPort, replicaPort int
	// Primary and Replica are pools of the application role (no special
	// privileges) on the rooms database; replicaAdmin is the superuser on
	// the replica, for pausing replay.
	Primary, Replica, replicaAdmin *pgxpool.Pool
}

func (c *cluster) data(node string) string { return filepath.Join(c.dir, node) }

func (c *cluster) start(node string, port int) {
	c.t.Helper()
	testenv.PGRun(c.t, "pg_ctl", "-D", c.data(node), "-l", filepath.Join(c.dir, node+".log"), "-w",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", port, c.dir), "start")
}

// stopReplica stops the replica (fast shutdown: sessions are ended).
func (c *cluster) stopReplica() {
	c.t.Helper()
	testenv.PGRun(c.t, "pg_ctl", "-D", c.data("replica"), "-m", "fast", "-w", "stop")
}

func (c *cluster) startReplica() { c.start("replica", c.replicaPort) }

func (c *cluster) pool(port int, role string) *pgxpool.Pool {
	c.t.Helper()
	p, err := pgxpool.New(context.Background(), fmt.Sprintf("postgres://%s@127.0.0.1:%d/rooms?sslmode=disable", role, port))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(p.Close)
	return p
}

// startCluster starts a primary, creates and migrates the rooms database
// on it, clones it into a replica and starts that as a hot standby.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	dir := testenv.PGTempDir(t, "rooms-replica-")
	c := &cluster{t: t, dir: dir, primaryPort: testenv.FreePort(t), replicaPort: testenv.FreePort(t)}
	for c.replicaPort == c.primaryPort {
		c.replicaPort = testenv.FreePort(t)
	}
	testenv.PGRun(c.t, "initdb", "-D", c.data("primary"), "-U", "postgres", "--auth=trust", "-E", "UTF8")
	conf, err := os.OpenFile(filepath.Join(c.data("primary"), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// fsync off: these servers hold nothing worth keeping after a crash.
	_, err = conf.WriteString("wal_level = replica\nmax_wal_senders = 4\nfsync = off\n")
	conf.Close()
	if err != nil {
		t.Fatal(err)
	}
	hba, err := os.OpenFile(filepath.Join(c.data("primary"), "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// "all" in the database column does not match replication connections.
	_, err = hba.WriteString("host replication replicator 127.0.0.1/32 trust\n")
	hba.Close()
	if err != nil {
		t.Fatal(err)
	}
	c.start("primary", c.primaryPort)
	// Registered after start: cleanups run last-in first-out, so the
	// replica (registered below) stops before the primary.
	t.Cleanup(func() { c.stopQuietly("primary") })

	ctx := context.Background()
	admin, err := pgxpool.New(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.primaryPort))
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`CREATE ROLE replicator WITH REPLICATION LOGIN`,
		`CREATE ROLE rooms WITH LOGIN`,
		`CREATE DATABASE rooms OWNER rooms`,
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			admin.Close()
			t.Fatalf("%s: %v", sql, err)
		}
	}
	admin.Close()
	dsn := fmt.Sprintf("postgres://rooms@127.0.0.1:%d/rooms?sslmode=disable", c.primaryPort)
	if err := testenv.Migrate(ctx, dsn, filepath.Join(testenv.RepoRoot(t), "db", "migrations")); err != nil {
		t.Fatal(err)
	}

	testenv.PGRun(c.t, "pg_basebackup", "-R", "-D", c.data("replica"), "-h", "127.0.0.1", "-p", strconv.Itoa(c.primaryPort),
		"-U", "replicator", "-X", "stream", "-c", "fast")
	c.startReplica()
	t.Cleanup(func() { c.stopQuietly("replica") })

	c.Primary = c.pool(c.primaryPort, "rooms")
	c.Replica = c.pool(c.replicaPort, "rooms")
	c.replicaAdmin = c.pool(c.replicaPort, "postgres")
	return c
}

func (c *cluster) stopQuietly(node string) { testenv.PGStopQuietly(c.data(node)) }

// waitReplayed waits until the replica has replayed everything the primary
// has written so far.
func (c *cluster) waitReplayed() {
	c.t.Helper()
	ctx := context.Background()
	var lsn string
	if err := c.Primary.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		c.t.Fatal(err)
	}
	testenv.Eventually(c.t, "the replica to replay up to "+lsn, func() bool {
		var ok bool
		err := c.replicaAdmin.QueryRow(ctx, `SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, lsn).Scan(&ok)
		return err == nil && ok
	})
}

func (c *cluster) replay(pause bool) {
	c.t.Helper()
	fn := "pg_wal_replay_resume()"
	if pause {
		fn = "pg_wal_replay_pause()"
	}
	if _, err := c.replicaAdmin.Exec(context.Background(), "SELECT "+fn); err != nil {
		c.t.Fatalf("%s: %v", fn, err)
	}
}

// room is a room with stored messages, written on the primary the way a
// worker writes them (rows and last_seq in one transaction).
type room struct {
	t    *testing.T
	db   *pgxpool.Pool
	id   int64
	user int64
	last int64
}

func newRoom(t *testing.T, s *store.Store, db *pgxpool.Pool) *room {
	t.Helper()
	ctx := context.Background()
	r, err := s.CreateRoom(ctx, "history")
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.CreateUser(ctx, "reader", "h")
	if err != nil {
		t.Fatal(err)
	}
	return &room{t: t, db: db, id: r.ID, user: u.ID}
}

// add stores n messages with contents "m<seq>".
func (r *room) add(n int) {
	r.t.Helper()
	ctx := context.Background()
	tx, err := r.db.Begin(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for range n {
		r.last++
		if _, err := tx.Exec(ctx, `INSERT INTO messages (room_id, seq, id, user_id, nickname, content, time_created)
			VALUES ($1, $2, $3, $4, 'reader', $5, now())`, r.id, r.last, uuid.Must(uuid.NewV7()), r.user, fmt.Sprint("m", r.last)); err != nil {
			r.t.Fatal(err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE rooms SET last_seq = $2 WHERE id = $1`, r.id, r.last); err != nil {
		r.t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		r.t.Fatal(err)
	}
}

// edit changes a stored message's content on the primary. Messages are
// never edited in Rooms; the tests do it so that a read shows which server
// answered it.
func (r *room) edit(seq int64, content string) {
	r.t.Helper()
	if _, err := r.db.Exec(context.Background(), `UPDATE messages SET content = $3 WHERE room_id = $1 AND seq = $2`,
		r.id, seq, content); err != nil {
		r.t.Fatal(err)
	}
}

// show renders messages as seq:content, for comparing reads.
func show(msgs []message.Message, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	out := ""
	for i, m := range msgs {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%d:%s", m.Seq, m.Content)
	}
	return out
}

func checkReads(t *testing.T, s *store.Store, roomID int64, want map[string]string) {
	t.Helper()
	ctx := context.Background()
	reads := map[string]func() ([]message.Message, error){
		"MessagesBefore(100, 10)": func() ([]message.Message, error) { return s.MessagesBefore(ctx, roomID, 100, 10) },
		"HistoryAfter(0, 10)":     func() ([]message.Message, error) { return s.HistoryAfter(ctx, roomID, 0, 10) },
		"LatestMessages(10)":      func() ([]message.Message, error) { return s.LatestMessages(ctx, roomID, 10) },
		"LatestMessages(2)":       func() ([]message.Message, error) { return s.LatestMessages(ctx, roomID, 2) },
		"MessagesAfter(0, 10)":    func() ([]message.Message, error) { return s.MessagesAfter(ctx, roomID, 0, 10) },
		"MessagesAfter(2, 10)":    func() ([]message.Message, error) { return s.MessagesAfter(ctx, roomID, 2, 10) },
	}
	for name, w := range want {
		read, ok := reads[name]
		if !ok {
			t.Fatalf("no read %s", name)
		}
		if got := show(read()); got != w {
			t.Errorf("%s = %q, want %q", name, got, w)
		}
	}
}

// TestReplicaServesHistory pauses replay on the replica and changes the
// primary behind its back: the history reads show the replica's older
// state, the seq-critical ones the primary's, and LatestMessages the
// replica's rows completed with the primary's newest.
func TestReplicaServesHistory(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	s := store.New(c.Primary, store.WithReplica(c.Replica, store.ReplicaOptions{MaxLag: time.Hour}))
	if s.ReplicaHealthy() {
		t.Fatal("healthy before the first check")
	}
	r := newRoom(t, s, c.Primary)
	r.add(3)
	c.waitReplayed()
	if lag, err := s.CheckReplica(ctx); err != nil || !s.ReplicaHealthy() {
		t.Fatalf("check of a caught-up replica: lag %s, %v", lag, err)
	}

	c.replay(true)
	r.add(1)
	r.edit(1, "edited")
	if lag, err := s.CheckReplica(ctx); err != nil || !s.ReplicaHealthy() {
		t.Fatalf("check of a paused replica with a max lag of 1h: lag %s, %v", lag, err)
	}
	checkReads(t, s, r.id, map[string]string{
		// The replica: neither the edit nor seq 4.
		"MessagesBefore(100, 10)": "1:m1 2:m2 3:m3",
		"HistoryAfter(0, 10)":     "1:m1 2:m2 3:m3",
		// The replica's rows, then the primary's newer tip.
		"LatestMessages(10)": "1:m1 2:m2 3:m3 4:m4",
		"LatestMessages(2)":  "3:m3 4:m4",
		// The primary.
		"MessagesAfter(0, 10)": "1:edited 2:m2 3:m3 4:m4",
	})
	if got, err := s.Room(ctx, r.id); err != nil || got.LastSeq != 4 {
		t.Fatalf("Room = %+v, %v; want last_seq 4 from the primary", got, err)
	}

	c.replay(false)
	c.waitReplayed()
	checkReads(t, s, r.id, map[string]string{
		"MessagesBefore(100, 10)": "1:edited 2:m2 3:m3 4:m4",
		"LatestMessages(10)":      "1:edited 2:m2 3:m3 4:m4",
	})
}

// TestReplicaLaggingUsesPrimary: a replica further behind than MaxLag is
// skipped until it catches up.
func TestReplicaLaggingUsesPrimary(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	s := store.New(c.Primary, store.WithReplica(c.Replica, store.ReplicaOptions{MaxLag: 200 * time.Millisecond}))
	r := newRoom(t, s, c.Primary)
	r.add(3)
	c.waitReplayed()
	testenv.Eventually(t, "a healthy replica", func() bool { _, err := s.CheckReplica(ctx); return err == nil })

	c.replay(true)
	r.add(1)
	r.edit(1, "edited")
	var lag time.Duration
	testenv.Eventually(t, "the replica to lag beyond 200ms", func() bool {
		var err error
		lag, err = s.CheckReplica(ctx)
		return errors.Is(err, store.ErrReplicaLagging)
	})
	if s.ReplicaHealthy() || lag <= 200*time.Millisecond {
		t.Fatalf("lagging replica: healthy %v, lag %s", s.ReplicaHealthy(), lag)
	}
	all := "1:edited 2:m2 3:m3 4:m4"
	checkReads(t, s, r.id, map[string]string{
		"MessagesBefore(100, 10)": all, "HistoryAfter(0, 10)": all, "LatestMessages(10)": all, "MessagesAfter(0, 10)": all,
	})

	c.replay(false)
	testenv.Eventually(t, "the replica to catch up", func() bool { _, err := s.CheckReplica(ctx); return err == nil })
	// An edit the paused replica has not replayed shows that it answers
	// history reads again.
	c.replay(true)
	r.edit(2, "edited again")
	checkReads(t, s, r.id, map[string]string{
		"MessagesBefore(100, 10)": all,
		"MessagesAfter(0, 10)":    "1:edited 2:edited again 3:m3 4:m4",
	})
	c.replay(false)
}

// TestReplicaDownUsesPrimary: a query on a replica that went away is run
// again on the primary and marks the replica unhealthy; the background
// check finds it again once it is back.
func TestReplicaDownUsesPrimary(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	s := store.New(c.Primary, store.WithReplica(c.Replica, store.ReplicaOptions{
		MaxLag: time.Hour, Interval: 50 * time.Millisecond,
	}))
	r := newRoom(t, s, c.Primary)
	r.add(3)
	c.waitReplayed()
	if _, err := s.CheckReplica(ctx); err != nil {
		t.Fatal(err)
	}
	// Open a connection to the replica, so the pool holds one that breaks.
	if got := show(s.MessagesBefore(ctx, r.id, 100, 10)); got != "1:m1 2:m2 3:m3" {
		t.Fatalf("before the stop: %s", got)
	}

	c.stopReplica()
	r.add(1)
	// No check ran since the stop: the store still takes the replica
	// for healthy, the query fails there and is run on the primary.
	if !s.ReplicaHealthy() {
		t.Fatal("unhealthy before any query or check failed")
	}
	all := "1:m1 2:m2 3:m3 4:m4"
	checkReads(t, s, r.id, map[string]string{"MessagesBefore(100, 10)": all})
	if s.ReplicaHealthy() {
		t.Fatal("still healthy after a failed query")
	}
	checkReads(t, s, r.id, map[string]string{
		"HistoryAfter(0, 10)": all, "LatestMessages(10)": all, "LatestMessages(2)": "3:m3 4:m4",
	})
	if _, err := s.CheckReplica(ctx); err == nil || errors.Is(err, store.ErrReplicaLagging) {
		t.Fatalf("check of a stopped replica: %v", err)
	}

	bctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.RunReplicaChecks(bctx) }()
	c.startReplica()
	testenv.Eventually(t, "the background check to find the replica healthy", s.ReplicaHealthy)
	checkReads(t, s, r.id, map[string]string{"LatestMessages(10)": all})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunReplicaChecks = %v", err)
	}
}

// TestReplicaNotAStandby: a "replica" that is not in recovery (here the
// primary itself) is never used; without a replica there is nothing to
// check.
func TestReplicaNotAStandby(t *testing.T) {
	db := testenv.Postgres(t)
	ctx := context.Background()
	plain := store.New(db.Pool)
	if _, err := plain.CheckReplica(ctx); !errors.Is(err, store.ErrNoReplica) {
		t.Fatalf("CheckReplica without a replica = %v", err)
	}
	if err := plain.RunReplicaChecks(ctx); err != nil || plain.ReplicaHealthy() {
		t.Fatalf("RunReplicaChecks without a replica = %v", err)
	}
	s := store.New(db.Pool, store.WithReplica(db.Pool, store.ReplicaOptions{}))
	if _, err := s.CheckReplica(ctx); err == nil || s.ReplicaHealthy() {
		t.Fatalf("CheckReplica on a primary = %v, healthy %v", err, s.ReplicaHealthy())
	}
	r := newRoom(t, s, db.Pool)
	r.add(2)
	checkReads(t, s, r.id, map[string]string{"LatestMessages(10)": "1:m1 2:m2", "HistoryAfter(0, 10)": "1:m1 2:m2"})
}
