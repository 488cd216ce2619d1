//go:build faults

package faults

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rooms/shared/testenv"
)

// proc is one process of the stack, restartable.
type proc struct {
	name  string
	bin   string
	args  []string
	env   []string
	addr  string // gateways: HTTP host:port; servers: the port to wait for
	ready string // "http" (GET /readyz) or "tcp" (a connect), or "" (none)
	log   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	starts int
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "---- start %s at %s ----\n", p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.starts++
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	switch p.ready {
	case "http":
		waitFor(t, p.name+" ready", 90*time.Second, done, func() bool {
			c := http.Client{Timeout: 2 * time.Second}
			resp, err := c.Get("http://" + p.addr + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	case "tcp":
		waitFor(t, p.name+" listening", 60*time.Second, done, func() bool {
			c, err := net.DialTimeout("tcp", p.addr, time.Second)
			if err != nil {
				return false
			}
			c.Close()
			return true
		})
	}
}

// exited is closed when the current run of the process has ended.
func (p *proc) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// stop sends sig and waits (at most 60 s, then SIGKILL) for the exit; it
// returns the exit error.
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

// logCount counts the lines of the process's log containing s.
func (p *proc) logCount(s string) int {
	f, err := os.Open(p.log)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// rssMB is the process's resident memory in MB (0 when it is not running).
func (p *proc) rssMB() float64 {
	pid := p.pid()
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// waitFor polls cond every 100 ms until it holds; it fails the test after
// timeout or when exited is closed first.
func waitFor(t *testing.T, what string, timeout time.Duration, exited <-chan struct{}, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if exited != nil {
			select {
			case <-exited:
				t.Fatalf("process exited while waiting for %s", what)
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventually is waitFor without a process.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	waitFor(t, what, timeout, nil, cond)
}

// stackOpts chooses the stack's shape and its private servers.
type stackOpts struct {
	gateways, workers int
	privatePG         bool // a private PostgreSQL server (s.pg) the test may stop
	privateRedis      bool // a private Redis server (s.redis) the test may stop
	noWorkers         bool // create the worker procs but do not start them
	env               []string
	workerEnv         []string
	gatewayEnv        []string
}

// stack is the system under test: a broker process, gateways and workers
// sharing one database, Redis prefix, topic and consumer group.
type stack struct {
	t        *testing.T
	db       *testenv.Database
	pg       *testenv.PGServer
	redis    *proc
	rdb      *redis.Client
	prefix   string
	broker   *proc
	brokers  string
	topic    string
	group    string
	common   []string
	logDir   string
	gateways []*proc
	workers  []*proc
}

func newStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	if o.gateways == 0 {
		o.gateways = 2
	}
	if o.workers == 0 {
		o.workers = 2
	}
	s := &stack{t: t, logDir: t.TempDir()}
	if o.privatePG {
		s.pg = testenv.StartPGServer(t, "max_connections=200", "fsync=off")
		s.db = s.pg.Database()
	} else {
		s.db = testenv.Postgres(t)
	}
	redisAddr := testenv.RedisAddr()
	if o.privateRedis {
		port := testenv.FreePort(t)
		redisAddr = fmt.Sprintf("127.0.0.1:%d", port)
		dir := t.TempDir()
		// No persistence: a restart starts empty (the stream data is lost).
		s.redis = &proc{name: "redis", bin: "redis-server", addr: redisAddr, ready: "tcp",
			args: []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir},
			log:  filepath.Join(s.logDir, "redis.log")}
		s.redis.start(t)
		s.rdb = redis.NewClient(&redis.Options{Addr: redisAddr})
		t.Cleanup(func() { s.rdb.Close() })
		s.prefix = "rooms:"
	} else {
		s.rdb, s.prefix = testenv.Redis(t)
	}
	brokerAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	s.broker = &proc{name: "broker", bin: filepath.Join(binDir, "devbroker"), addr: brokerAddr, ready: "tcp",
		env: []string{"DEVBROKER_ADDR=" + brokerAddr, "DEVBROKER_DATA_DIR=" + t.TempDir(), "LOG_LEVEL=warn"},
		log: filepath.Join(s.logDir, "broker.log")}
	s.broker.start(t)
	s.brokers = brokerAddr
	s.topic = "chat.messages." + testenv.RandomID(4)
	s.group = "rooms-workers-" + testenv.RandomID(4)
	s.common = []string{
		"DATABASE_URL=" + s.db.DSN,
		"REDIS_ADDR=" + redisAddr,
		"REDIS_PREFIX=" + s.prefix,
		"KAFKA_BROKERS=" + brokerAddr,
		"KAFKA_TOPIC=" + s.topic,
		"KAFKA_PARTITIONS=4",
		"KAFKA_GROUP=" + s.group,
		"JWT_SECRET=faults-secret-faults-secret-faults-secret",
		"LOG_LEVEL=info",
		"SHUTDOWN_TIMEOUT=20s",
		// The suite drives the pipeline, not the per-user send limit.
		"SEND_RATE=5000",
		"SEND_BURST=5000",
		"AUTH_RATE_LIMIT=0",
		"AUTH_RATE_LIMIT_IP=0",
		"HASH_CONCURRENCY=4",
	}
	s.common = append(s.common, o.env...)
	for i := 1; i <= o.workers; i++ {
		s.addWorker(o.workerEnv...)
	}
	for i := 1; i <= o.gateways; i++ {
		name := fmt.Sprintf("gw-%d", i)
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		env := append(append(append([]string{}, s.common...), o.gatewayEnv...), "GATEWAY_ID="+name, "HTTP_ADDR="+addr)
		s.gateways = append(s.gateways, &proc{name: name, bin: filepath.Join(binDir, "gateway"), addr: addr, ready: "http",
			env: env, log: filepath.Join(s.logDir, name+".log")})
	}
	t.Cleanup(func() {
		all := append(append([]*proc{}, s.gateways...), s.workers...)
		var wg sync.WaitGroup
		for _, p := range all {
			wg.Add(1)
			go func() { defer wg.Done(); _ = p.stop(t, syscall.SIGTERM) }()
		}
		wg.Wait()
		_ = s.broker.stop(t, syscall.SIGTERM)
		if s.redis != nil {
			_ = s.redis.stop(t, syscall.SIGTERM)
		}
		if t.Failed() {
			for _, p := range append(all, s.broker) {
				b, _ := os.ReadFile(p.log)
				if len(b) > 6000 {
					b = b[len(b)-6000:]
				}
				t.Logf("---- tail of %s log ----\n%s", p.name, bytes.TrimSpace(b))
			}
		}
	})
	if !o.noWorkers {
		s.startWorkers()
	}
	for _, p := range s.gateways {
		p.start(t)
	}
	return s
}

// addWorker adds a worker proc (not started).
func (s *stack) addWorker(extra ...string) *proc {
	name := fmt.Sprintf("worker-%d", len(s.workers)+1)
	env := append(append(append([]string{}, s.common...), extra...), "WORKER_ID="+name)
	p := &proc{name: name, bin: filepath.Join(binDir, "worker"), env: env, log: filepath.Join(s.logDir, name+".log")}
	s.workers = append(s.workers, p)
	return p
}

func (s *stack) startWorkers() {
	for _, p := range s.workers {
		p.start(s.t)
	}
}

func (s *stack) url(i int) string { return "http://" + s.gateways[i].addr }
