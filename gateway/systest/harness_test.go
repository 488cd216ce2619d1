// Package systest drives the real gateway and worker binaries together, two
// of each, against real PostgreSQL, Redis and an embedded Kafka-protocol
// broker, speaking only the public API as a client written from API.md would.
package systest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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
	for _, pkg := range []string{"rooms/gateway/cmd/gateway", "rooms/worker/cmd/worker"} {
		out := filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-race", "-o", out, pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one running binary of the stack.
type proc struct {
	name string
	bin  string
	env  []string
	addr string // gateways only: host:port of the HTTP listener
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.bin)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	if p.addr != "" {
		waitReady(t, "http://"+p.addr+"/readyz", done)
	}
}

// signal sends sig and waits for the process to exit; it returns the exit error.
func (p *proc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
	default:
		_ = cmd.Process.Signal(sig)
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("%s did not exit within 60s of %v", p.name, sig)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cmd = nil
	return p.err
}

func waitReady(t *testing.T, url string, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("process exited before %s answered", url)
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 90s", url)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

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
		s.workers = append(s.workers, &proc{name: name, bin: filepath.Join(binDir, "worker"),
			env: append(append([]string{}, common...), "WORKER_ID="+name), log: filepath.Join(logDir, name+".log")})
	}
	for i := 1; i <= o.gateways; i++ {
		name := fmt.Sprintf("gw-%d", i)
		addr := freeAddr(t)
		s.gateways = append(s.gateways, &proc{name: name, bin: filepath.Join(binDir, "gateway"), addr: addr,
			env: append(append([]string{}, common...), "GATEWAY_ID="+name, "HTTP_ADDR="+addr), log: filepath.Join(logDir, name+".log")})
	}
	t.Cleanup(func() {
		for _, p := range append(append([]*proc{}, s.gateways...), s.workers...) {
			_ = p.stop(t, syscall.SIGTERM)
			if t.Failed() {
				b, _ := os.ReadFile(p.log)
				if len(b) > 8000 {
					b = b[len(b)-8000:]
				}
				t.Logf("---- tail of %s log ----\n%s", p.name, bytes.TrimSpace(b))
			}
		}
	})
	for _, p := range s.workers {
		p.start(t)
	}
	for _, p := range s.gateways {
		p.start(t)
	}
	return s
}

func (s *stack) url(i int) string { return "http://" + s.gateways[i].addr }

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
