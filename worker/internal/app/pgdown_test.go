package app_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"rooms/shared/testenv"
)

const pgBin = "/usr/lib/postgresql/15/bin"

// pgServer is a private PostgreSQL server in a temporary folder, on a spare
// port, that a test may stop and start. The machine's shared server is
// never touched.
type pgServer struct {
	t    *testing.T
	dir  string
	port int
}

// pgCommand runs a PostgreSQL program, as the postgres user when the test
// runs as root (the server refuses to run as root).
func (s *pgServer) run(name string, args ...string) {
	s.t.Helper()
	path := filepath.Join(pgBin, name)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func startPGServer(t *testing.T) *pgServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "rooms-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("no postgres user to run a private server: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &pgServer{t: t, dir: dir, port: port}
	s.run("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8")
	s.start()
	t.Cleanup(func() {
		cmd := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(pgBin, "pg_ctl"), "-D", filepath.Join(dir, "data"), "-m", "immediate", "stop")
		if os.Geteuid() != 0 {
			cmd = exec.Command(filepath.Join(pgBin, "pg_ctl"), "-D", filepath.Join(dir, "data"), "-m", "immediate", "stop")
		}
		_ = cmd.Run()
	})
	return s
}

func (s *pgServer) start() {
	s.t.Helper()
	s.run("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-l", filepath.Join(s.dir, "log"), "-w",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", s.port, s.dir), "start")
}

func (s *pgServer) stop() {
	s.t.Helper()
	s.run("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", "fast", "-w", "stop")
}

// database creates and migrates a database on the private server.
func (s *pgServer) database() *testenv.Database {
	s.t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port))
	if err != nil {
		s.t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE rooms"); err != nil {
		s.t.Fatal(err)
	}
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/rooms?sslmode=disable", s.port)
	if err := testenv.Migrate(ctx, dsn, filepath.Join(testenv.RepoRoot(s.t), "db", "migrations")); err != nil {
		s.t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(pool.Close)
	return &testenv.Database{Name: "rooms", DSN: dsn, Pool: pool}
}

func TestPostgresOutageDelaysButLosesNothing(t *testing.T) {
	srv := startPGServer(t)
	e := newEnvOn(t, srv.database(), 8)
	e.createTopic()
	e.produce(600)
	e.start("w1")
	e.eventually("first messages stored", func() bool { return e.stored() >= 100 })

	srv.stop()
	e.produce(800)
	// The worker keeps polling and retries the failing batches.
	e.eventually("the worker to notice the outage", func() bool { return e.failed.Load() > 0 })
	time.Sleep(time.Second) // let the outage last a few retries; not an assertion
	srv.start()

	e.produce(200)
	e.eventually("every message stored", func() bool { return e.stored() == e.total() })
	e.eventually("offsets committed", func() bool { return e.committed() == int64(e.total()) })
	e.checkPostgres()
	e.checkStreams(false)
	t.Logf("failed store tries: %d, partition pauses: %d", e.failed.Load(), e.paused.Load())
}
