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
