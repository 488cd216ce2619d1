package testenv_test

import (
	"context"
	"testing"

	"rooms/shared/testenv"
)

func TestPostgresIsMigrated(t *testing.T) {
	db := testenv.Postgres(t)
	var n int
	err := db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'
		 AND table_name IN ('users','refresh_tokens','rooms','messages','dead_letters')`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Fatalf("want 5 tables, got %d", n)
	}
}

func TestRedisPrefixIsCleaned(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	if err := rdb.Set(context.Background(), prefix+"k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := rdb.Get(context.Background(), prefix+"k").Val(); got != "v" {
		t.Fatalf("got %q", got)
	}
}

func TestKafkaListens(t *testing.T) {
	c := testenv.Kafka(t)
	if len(c.ListenAddrs()) != 1 {
		t.Fatalf("want one broker, got %v", c.ListenAddrs())
	}
}

func TestPGServerStopsAndStartsWithItsData(t *testing.T) {
	srv := testenv.StartPGServer(t, "fsync=off")
	db := srv.Database()
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO rooms (name) VALUES ('kept')`); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := db.Pool.Ping(ctx); err == nil {
		t.Fatal("the stopped server answered")
	}
	srv.Start()
	var name string
	if err := db.Pool.QueryRow(ctx, `SELECT name FROM rooms`).Scan(&name); err != nil || name != "kept" {
		t.Fatalf("after a restart: %q, %v", name, err)
	}
	var fsync string
	if err := db.Pool.QueryRow(ctx, `SHOW fsync`).Scan(&fsync); err != nil || fsync != "off" {
		t.Fatalf("fsync %q, %v: the setting was not applied", fsync, err)
	}
}
