// Package systest drives the real gateway and worker binaries together, two
// of each, against real PostgreSQL, Redis and an embedded Kafka-protocol
// broker, speaking only the public API as a client written from API.md would.
package systest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"rooms/shared/testenv"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rooms-systest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	if err := testenv.BuildBinaries(dir, []string{"-race"}, "rooms/gateway/cmd/gateway", "rooms/worker/cmd/worker"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one running binary of the stack.
type proc = testenv.Service

// stack is two gateways and two workers sharing one database, Redis prefix,
// topic and consumer group.
type stack struct {
	db       *testenv.Database
	pool     *pgxpool.Pool
	rdb      *redis.Client
	prefix   string
	gateways []*proc
	workers  []*proc
}

type stackOpts struct {
	gateways, workers int
	extraEnv          []string
}

func newStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	if o.gateways == 0 {
		o.gateways = 2
	}
	if o.workers == 0 {
		o.workers = 2
	}
	db := testenv.Postgres(t)
	rdb, prefix := testenv.Redis(t)
	broker := testenv.Kafka(t)
	logDir := t.TempDir()
	common := []string{
		"DATABASE_URL=" + db.DSN,
		"REDIS_ADDR=" + testenv.RedisAddr(),
		"REDIS_PREFIX=" + prefix,
		"KAFKA_BROKERS=" + strings.Join(broker.ListenAddrs(), ","),
		"KAFKA_TOPIC=chat.messages." + testenv.RandomID(4),
		"KAFKA_PARTITIONS=4",
		"KAFKA_GROUP=rooms-workers-" + testenv.RandomID(4),
		"JWT_SECRET=systest-secret-systest-secret-systest-secret",
		"ALLOWED_ORIGINS=http://allowed.example",
		"LOG_LEVEL=debug",
		"SHUTDOWN_TIMEOUT=20s",
		// These tests drive the pipeline, not the per-user send limit.
		"SEND_RATE=2000",
		"SEND_BURST=2000",
	}
	common = append(common, o.extraEnv...)
	s := &stack{db: db, pool: db.Pool, rdb: rdb, prefix: prefix}
	for i := 1; i <= o.workers; i++ {
		name := fmt.Sprintf("worker-%d", i)
		s.workers = append(s.workers, &proc{Name: name, Bin: filepath.Join(binDir, "worker"),
			Env: append(append([]string{}, common...), "WORKER_ID="+name), Log: filepath.Join(logDir, name+".log")})
	}
	for i := 1; i <= o.gateways; i++ {
		name := fmt.Sprintf("gw-%d", i)
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		s.gateways = append(s.gateways, &proc{Name: name, Bin: filepath.Join(binDir, "gateway"), Addr: addr, Ready: "http",
			Env: append(append([]string{}, common...), "GATEWAY_ID="+name, "HTTP_ADDR="+addr), Log: filepath.Join(logDir, name+".log")})
	}
	t.Cleanup(func() {
		for _, p := range append(append([]*proc{}, s.gateways...), s.workers...) {
			_ = p.Stop(t, syscall.SIGTERM)
			if t.Failed() {
				b, _ := os.ReadFile(p.Log)
				if len(b) > 8000 {
					b = b[len(b)-8000:]
				}
				t.Logf("---- tail of %s log ----\n%s", p.Name, bytes.TrimSpace(b))
			}
		}
	})
	for _, p := range s.workers {
		p.Start(t)
	}
	for _, p := range s.gateways {
		p.Start(t)
	}
	return s
}

func (s *stack) url(i int) string { return "http://" + s.gateways[i].Addr }

// storedSeqs returns, per stored message of the room, its client_msg_id by seq.
func (s *stack) stored(t *testing.T, roomID string) (seqs []int64, cmids []string) {
	t.Helper()
	rows, err := s.pool.Query(context.Background(),
		`SELECT seq, coalesce(client_msg_id, '') FROM messages WHERE room_id = $1 ORDER BY seq`, roomID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var c string
		if err := rows.Scan(&seq, &c); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
		cmids = append(cmids, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return seqs, cmids
}
