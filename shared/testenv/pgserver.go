package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PGServer is a private PostgreSQL server in a temporary folder on a spare
// loopback port, for tests that stop, kill or cut it; the machine's shared
// server is never touched. It is stopped (immediate mode) and removed when
// the test ends.
type PGServer struct {
	t        testing.TB
	Dir      string // the server's folder: data/ and log
	Port     int
	settings []string
}

// StartPGServer initialises and starts a private server. Each setting is a
// server parameter as name=value (for example "fsync=off").
func StartPGServer(t testing.TB, settings ...string) *PGServer {
	t.Helper()
	s := &PGServer{t: t, Dir: PGTempDir(t, "rooms-pg-"), Port: FreePort(t), settings: settings}
	PGRun(t, "initdb", "-D", s.Data(), "-U", "postgres", "--auth=trust", "-E", "UTF8")
	s.Start()
	t.Cleanup(func() { PGStopQuietly(s.Data()) })
	return s
}

// Data is the server's data folder.
func (s *PGServer) Data() string { return filepath.Join(s.Dir, "data") }

// Start starts the (stopped) server and waits until it accepts connections.
func (s *PGServer) Start() {
	s.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", s.Port, s.Dir)
	for _, kv := range s.settings {
		opts += " -c " + kv
	}
	PGRun(s.t, "pg_ctl", "-D", s.Data(), "-l", filepath.Join(s.Dir, "log"), "-w", "-o", opts, "start")
}

// Stop is a fast shutdown: sessions are ended, the server goes away.
func (s *PGServer) Stop() {
	s.t.Helper()
	PGRun(s.t, "pg_ctl", "-D", s.Data(), "-m", "fast", "-w", "stop")
}

// DSN is the superuser's connection string for database db.
func (s *PGServer) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// Database creates the database "rooms" on the server, migrates it and
// returns a pool on it (closed when the test ends).
func (s *PGServer) Database() *Database {
	s.t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		s.t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE rooms"); err != nil {
		s.t.Fatal(err)
	}
	dsn := s.DSN("rooms")
	if err := Migrate(ctx, dsn, filepath.Join(RepoRoot(s.t), "db", "migrations")); err != nil {
		s.t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(pool.Close)
	return &Database{Name: "rooms", DSN: dsn, Pool: pool}
}

// PGBinDir is the folder of the PostgreSQL server programs: PG_BINDIR if
// set, else the newest /usr/lib/postgresql/<version>/bin (Debian's layout),
// else the folder `pg_config --bindir` names.
func PGBinDir(t testing.TB) string {
	t.Helper()
	d, err := findPGBinDir()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func findPGBinDir() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) < pgVersion(dirs[j]) })
	if len(dirs) > 0 {
		return dirs[len(dirs)-1], nil
	}
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		return "", fmt.Errorf("no PostgreSQL server programs: set PG_BINDIR (no /usr/lib/postgresql/*/bin, pg_config: %w)", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// pgCommand is a PostgreSQL program's command, run as the postgres user
// when the test runs as root (the server refuses to run as root).
func pgCommand(binDir, name string, args ...string) *exec.Cmd {
	path := filepath.Join(binDir, name)
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

// PGRun runs a PostgreSQL program (initdb, pg_ctl, pg_basebackup, …) and
// fails the test with its output if it fails.
func PGRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := pgCommand(PGBinDir(t), name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// PGStopQuietly stops the server of a data folder in immediate mode,
// ignoring errors (it may be stopped already).
func PGStopQuietly(data string) {
	bin, err := findPGBinDir()
	if err != nil {
		return
	}
	_ = pgCommand(bin, "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop").Run()
}

// PGTempDir makes a temporary folder (removed when the test ends) that the
// postgres user owns when the test runs as root.
func PGTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
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
	return dir
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Freeze stops the whole server with SIGSTOP (see Freeze): the postmaster
// first, so that it starts no backend while its children are listed, then
// every child (backends and background processes). Its connections stay
// open and nothing answers, as with a server cut off without a reset.
func (s *PGServer) Freeze(t testing.TB) (thaw func()) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Data(), "postmaster.pid"))
	if err != nil {
		t.Fatalf("postgres pid: %v", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pm, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatalf("postgres pid: postmaster.pid starts with %q", first)
	}
	thawPostmaster := Freeze(t, pm)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("postgres pids: %v", err)
	}
	var children []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := procStat(pid); len(f) > 1 && f[1] == strconv.Itoa(pm) {
			children = append(children, pid)
		}
	}
	if len(children) == 0 {
		t.Fatalf("postgres: no child of postmaster %d", pm)
	}
	thawChildren := Freeze(t, children...)
	return func() {
		thawChildren()
		thawPostmaster()
	}
}
