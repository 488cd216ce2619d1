//go:build faults

package faults

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rooms/shared/testenv"
)

// proc is one process of the stack, restartable.
type proc = testenv.Service

// eventually is testenv.WaitFor without a process.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, what, timeout, nil, cond)
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
	firstGatewayEnv   []string // added to gw-1's environment only
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
		// No persistence: a restart starts empty (the stream data is lost).
		s.redis = testenv.StartRedisServer(t, s.logDir)
		redisAddr = s.redis.Addr
		s.rdb = redis.NewClient(&redis.Options{Addr: redisAddr})
		t.Cleanup(func() { s.rdb.Close() })
		s.prefix = "rooms:"
	} else {
		s.rdb, s.prefix = testenv.Redis(t)
	}
	brokerAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	s.broker = &proc{Name: "broker", Bin: filepath.Join(binDir, "devbroker"), Addr: brokerAddr, Ready: "tcp",
		Env: []string{"DEVBROKER_ADDR=" + brokerAddr, "DEVBROKER_DATA_DIR=" + t.TempDir(), "LOG_LEVEL=warn"},
		Log: filepath.Join(s.logDir, "broker.log")}
	s.broker.Start(t)
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
		if i == 1 {
			// gw-1 runs with one P, as the local stack runs its gateways
			// on a small machine, so that the faults meet the fan-out
			// reader's own writes (ws/deliver.go); the others take the
			// writers' path of a gateway with more Ps.
			env = append(env, "GOMAXPROCS=1")
			env = append(env, o.firstGatewayEnv...)
		}
		s.gateways = append(s.gateways, &proc{Name: name, Bin: filepath.Join(binDir, "gateway"), Addr: addr, Ready: "http",
			Env: env, Log: filepath.Join(s.logDir, name+".log")})
	}
	t.Cleanup(func() {
		all := append(append([]*proc{}, s.gateways...), s.workers...)
		var wg sync.WaitGroup
		for _, p := range all {
			wg.Add(1)
			go func() { defer wg.Done(); _ = p.Stop(t, syscall.SIGTERM) }()
		}
		wg.Wait()
		_ = s.broker.Stop(t, syscall.SIGTERM)
		if s.redis != nil {
			_ = s.redis.Stop(t, syscall.SIGTERM)
		}
		if t.Failed() {
			for _, p := range append(all, s.broker) {
				b, _ := os.ReadFile(p.Log)
				if len(b) > 6000 {
					b = b[len(b)-6000:]
				}
				t.Logf("---- tail of %s log ----\n%s", p.Name, bytes.TrimSpace(b))
			}
		}
	})
	if !o.noWorkers {
		s.startWorkers()
	}
	for _, p := range s.gateways {
		p.Start(t)
	}
	return s
}

// addWorker adds a worker proc (not started).
func (s *stack) addWorker(extra ...string) *proc {
	name := fmt.Sprintf("worker-%d", len(s.workers)+1)
	env := append(append(append([]string{}, s.common...), extra...), "WORKER_ID="+name)
	p := &proc{Name: name, Bin: filepath.Join(binDir, "worker"), Env: env, Log: filepath.Join(s.logDir, name+".log")}
	s.workers = append(s.workers, p)
	return p
}

func (s *stack) startWorkers() {
	for _, p := range s.workers {
		p.Start(s.t)
	}
}

func (s *stack) url(i int) string { return "http://" + s.gateways[i].Addr }
