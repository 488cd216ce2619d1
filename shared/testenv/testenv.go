// Package testenv gives tests their own freshly migrated PostgreSQL
// database, their own Redis key prefix and an embedded Kafka-protocol broker,
// all on real servers over real sockets. A service that cannot be reached is
// a test failure, never a skip.
//
// The servers are found through ROOMS_TEST_PG (an admin DSN allowed to create
// databases) and ROOMS_TEST_REDIS (host:port); both default to the local
// stack's servers.
package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// DefaultAdminDSN is the admin connection used to create test databases.
const DefaultAdminDSN = "postgres://rooms:rooms@127.0.0.1:5432/postgres?sslmode=disable"

// RandomID returns n random bytes in hex, for unique names.
func RandomID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

// RepoRoot returns the repository root (the folder holding go.work).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.work above the test's folder")
		}
		dir = parent
	}
}

func adminDSN() string {
	if v := os.Getenv("ROOMS_TEST_PG"); v != "" {
		return v
	}
	return DefaultAdminDSN
}

// Database is a freshly created and migrated database for one test.
type Database struct {
	Name string
	DSN  string
	Pool *pgxpool.Pool
}

// Postgres creates a new database, applies every migration of db/migrations
// to it and drops it when the test ends.
func Postgres(t testing.TB) *Database {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminDSN())
	if err != nil {
		t.Fatalf("testenv: PostgreSQL is not reachable at ROOMS_TEST_PG (%s): %v", redactDSN(adminDSN()), err)
	}
	defer admin.Close(context.Background())
	name := "rooms_test_" + RandomID(6)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, adminDSN())
		if err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(adminDSN())
	if err != nil {
		t.Fatalf("testenv: parse ROOMS_TEST_PG: %v", err)
	}
	u.Path = "/" + name
	dsn := u.String()
	if err := Migrate(ctx, dsn, filepath.Join(RepoRoot(t), "db", "migrations")); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatalf("testenv: pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return &Database{Name: name, DSN: dsn, Pool: pool}
}

// Migrate applies the "-- migrate:up" part of every dbmate migration in dir,
// in file name order, to the database at dsn. It is how tests get the schema
// from the same files dbmate applies to real databases.
func Migrate(ctx context.Context, dsn, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.sql"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no migrations in %s", dir)
	}
	sort.Strings(files)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect for migrations: %w", err)
	}
	defer conn.Close(ctx)
	for _, f := range files {
		up, err := upSection(f)
		if err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, up); err != nil {
			return fmt.Errorf("apply %s: %w", filepath.Base(f), err)
		}
	}
	return nil
}

func upSection(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read migration: %w", err)
	}
	defer f.Close()
	var b strings.Builder
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch trimmed := strings.TrimSpace(line); {
		case strings.HasPrefix(trimmed, "-- migrate:up"):
			in = true
			continue
		case strings.HasPrefix(trimmed, "-- migrate:down"):
			in = false
			continue
		}
		if in {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read migration %s: %w", path, err)
	}
	return b.String(), nil
}

func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}

// RedisAddr is the Redis server tests use.
func RedisAddr() string {
	if v := os.Getenv("ROOMS_TEST_REDIS"); v != "" {
		return v
	}
	return "127.0.0.1:6379"
}

// Redis returns a client of the test Redis server and a key prefix of the
// test's own; the prefix's keys are deleted when the test ends.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: RedisAddr()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("testenv: Redis is not reachable at %s: %v", RedisAddr(), err)
	}
	prefix := "roomstest:" + RandomID(6) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		_ = rdb.Close()
	})
	return rdb, prefix
}
