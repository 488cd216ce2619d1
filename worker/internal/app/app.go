// Package app wires the worker: configuration, PostgreSQL, Redis, the topic
// and the consumer pool, and shuts them down in order.
package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"rooms/shared/admin"
	"rooms/shared/config"
	"rooms/shared/logging"
	"rooms/shared/message"
	"rooms/shared/tracing"
	"rooms/worker/internal/broadcast"
	"rooms/worker/internal/consume"
	"rooms/worker/internal/metrics"
	"rooms/worker/internal/store"
)

// Config is the worker's configuration, read from the environment.
type Config struct {
	config.Postgres
	config.Redis
	config.Kafka
	config.Log
	config.Shutdown

	// WorkerID names this process in the consumer group and the logs
	// (default hostname-pid).
	WorkerID string `env:"WORKER_ID"`
	// Group is the consumer group all workers share.
	Group string `env:"KAFKA_GROUP" envDefault:"rooms-workers"`
	// SessionTimeout is how long the group waits for a worker that stopped
	// heartbeating (killed, frozen) before its partitions move on. Lower
	// means faster recovery from a crash; too low means needless
	// rebalances when a worker is briefly starved of CPU.
	SessionTimeout time.Duration `env:"KAFKA_SESSION_TIMEOUT" envDefault:"10s"`
	// FetchWait is the longest a fetch waits on the broker for
	// FetchMinBytes of records (librdkafka fetch.wait.max.ms). With the
	// default FetchMinBytes of 1 a fetch returns as soon as records arrive,
	// and FetchWait only sets how often an idle worker asks again.
	FetchWait time.Duration `env:"KAFKA_FETCH_WAIT" envDefault:"100ms"`
	// FetchMinBytes is how many bytes of records a fetch waits for
	// (librdkafka fetch.min.bytes). Raising it (with a short FetchWait)
	// makes records arrive in chunks, FetchWait apart, at the cost of that
	// much latency per message and a fetch per FetchWait when idle.
	FetchMinBytes int `env:"KAFKA_FETCH_MIN_BYTES" envDefault:"1"`
	// BatchSize is the most records per partition batch.
	BatchSize int `env:"BATCH_SIZE" envDefault:"500"`
	// BatchLinger is how long a batch waits for more records.
	BatchLinger time.Duration `env:"BATCH_LINGER" envDefault:"1ms"`
	// TxInterval is the shortest time between the starts of two of the
	// worker's transactions: the batches of its partitions that arrive
	// meanwhile share the next one (store.Combiner).
	TxInterval time.Duration `env:"TX_INTERVAL" envDefault:"10ms"`
	// MaxAttempts is how many failed tries of a batch (transient errors
	// aside) come before its records are tried one by one and dead-lettered.
	MaxAttempts int `env:"MAX_ATTEMPTS" envDefault:"5"`
	// StoreTryTimeout bounds one try of a batch in PostgreSQL
	// (store.Options.TryTimeout): a try still running after it is
	// abandoned and retried on a new connection. A healthy batch takes
	// milliseconds.
	StoreTryTimeout time.Duration `env:"STORE_TRY_TIMEOUT" envDefault:"30s"`
	// StepAsideAfter is how long the worker may fail to reach PostgreSQL or
	// Redis, without a break, before it leaves the consumer group so that
	// the other workers take its partitions (consume.Config.Reachable); it
	// joins again as soon as it reaches both. Longer than a restart of
	// either, so that an outage every worker sees does not make them all
	// leave; 0: never.
	StepAsideAfter time.Duration `env:"STEP_ASIDE_AFTER" envDefault:"60s"`
	// FanoutMaxLen trims each fan-out stream to about this many entries.
	FanoutMaxLen int64 `env:"FANOUT_MAXLEN" envDefault:"10000"`
	// MaxContent is the content length limit, in characters; keep it the
	// gateway's.
	MaxContent int `env:"MAX_CONTENT" envDefault:"2000"`
	// Failpoint is a crash point for fault tests (consume.Failpoint); off
	// when empty.
	Failpoint string `env:"ROOMS_FAILPOINT"`
	// AdminAddr is the operations listener: /metrics, /healthz and
	// /debug/pprof (package admin), e.g. 127.0.0.1:9201. Keep it off the
	// public network. Unset, there is none: a fixed default port would
	// make every second gateway or worker on one machine (tests next to
	// the local stack) fail to start.
	AdminAddr string `env:"ADMIN_ADDR"`
}

// check refuses settings out of range, naming each.
func (cfg Config) check() error {
	var c config.Checks
	c.Shared(cfg.Postgres, cfg.Kafka, cfg.Log, cfg.Shutdown)
	c.Want(cfg.SessionTimeout > 0, "KAFKA_SESSION_TIMEOUT", cfg.SessionTimeout, "positive")
	c.Want(cfg.FetchWait >= 0, "KAFKA_FETCH_WAIT", cfg.FetchWait, "0 or positive")
	c.Want(cfg.FetchMinBytes >= 1, "KAFKA_FETCH_MIN_BYTES", cfg.FetchMinBytes, "at least 1")
	c.Want(cfg.BatchSize >= 1, "BATCH_SIZE", cfg.BatchSize, "at least 1")
	c.Want(cfg.BatchLinger >= 0, "BATCH_LINGER", cfg.BatchLinger, "0 or positive")
	c.Want(cfg.TxInterval >= 0, "TX_INTERVAL", cfg.TxInterval, "0 or positive")
	c.Want(cfg.MaxAttempts >= 1, "MAX_ATTEMPTS", cfg.MaxAttempts, "at least 1")
	c.Want(cfg.StoreTryTimeout >= 0, "STORE_TRY_TIMEOUT", cfg.StoreTryTimeout, "0 (no limit) or positive")
	c.Want(cfg.StepAsideAfter >= 0, "STEP_ASIDE_AFTER", cfg.StepAsideAfter, "0 (never) or positive")
	c.Want(cfg.MaxContent >= 1, "MAX_CONTENT", cfg.MaxContent, "at least 1")
	return c.Err()
}

// Run runs the worker until ctx ends, then shuts down within
// SHUTDOWN_TIMEOUT: the in-flight batches are finished, their offsets
// committed and the consumer closed.
func Run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Parse[Config](getenv)
	if err != nil {
		return err
	}
	if err := cfg.check(); err != nil {
		return err
	}
	if cfg.WorkerID == "" {
		host, _ := os.Hostname()
		cfg.WorkerID = host + "-" + strconv.Itoa(os.Getpid())
	}
	if cfg.FanoutMaxLen <= 0 {
		cfg.FanoutMaxLen = message.DefaultFanoutMaxLen
	}
	log := logging.New(stdout, cfg.Level, "worker").With("worker_id", cfg.WorkerID)
	log.Info("starting", "gomaxprocs", runtime.GOMAXPROCS(0), "config", config.Redacted(cfg))

	pgCfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	if cfg.MaxConns > 0 {
		pgCfg.MaxConns = cfg.MaxConns
	}
	store.TunePool(pgCfg)
	// The pool connects lazily: a database that is down at start delays
	// the first batch (which retries) instead of failing the process.
	pool, err := pgxpool.NewWithConfig(ctx, pgCfg)
	if err != nil {
		return fmt.Errorf("create postgres pool: %w", err)
	}
	defer pool.Close()

	rdb := redis.NewClient(&redis.Options{Addr: cfg.Addr, Password: cfg.Password, DB: cfg.DB})
	defer rdb.Close()

	if err := ensureTopic(ctx, cfg); err != nil {
		return err
	}

	fp, err := consume.ParseFailpoint(cfg.Failpoint)
	if err != nil {
		return err
	}
	if fp != nil {
		what := "kill"
		if fp.Stops() {
			what = "freeze"
		}
		log.Warn("failpoint armed: this worker will "+what+" itself (fault tests only)", "failpoint", cfg.Failpoint)
	}

	reg := admin.NewRegistry()
	mt := metrics.New(reg)
	if cfg.AdminAddr != "" {
		ln, err := net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			return fmt.Errorf("listen on ADMIN_ADDR %s: %w", cfg.AdminAddr, err)
		}
		// Served until the consumer has stopped, so a scrape sees the
		// drain.
		actx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
		adminDone := make(chan struct{})
		go func() {
			defer close(adminDone)
			if err := admin.Serve(actx, ln, admin.Handler(reg, log), log); err != nil {
				log.Error("admin server stopped", "err", err)
			}
		}()
		defer func() { stopAdmin(); <-adminDone }()
	}

	// Spans of the batches, exported over OTLP when the standard OTEL_*
	// environment asks for it (otherwise a no-op provider). Flushed after
	// the consumer has stopped, within the rest of the shutdown deadline.
	tp, err := tracing.New(ctx, getenv, "worker")
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(cfg.Timeout/4, time.Second))
		defer cancel()
		if err := tp.Shutdown(fctx); err != nil {
			log.Warn("flush traces", "err", err)
		}
	}()

	var beforeCommit func()
	if fp != nil {
		// Only a fault test sets a failpoint: the store then commits in a
		// round trip of its own, after this crash point.
		beforeCommit = func() { fp.Hit(consume.FailInTx) }
	}
	st := store.New(pool, store.Options{
		MaxAttempts: cfg.MaxAttempts,
		MaxContent:  cfg.MaxContent,
		TryTimeout:  cfg.StoreTryTimeout,
		OnRetry: func(err error, transient bool, try int) {
			if transient {
				mt.RetriesTransient.Inc()
			} else {
				mt.RetriesFailed.Inc()
			}
			log.Warn("store batch failed", "err", err, "transient", transient, "try", try)
		},
		BeforeCommit: beforeCommit,
		OnCommit:     func(d time.Duration) { mt.CommitSeconds.Observe(d.Seconds()) },
	})
	bc := broadcast.New(rdb, broadcast.Options{
		Prefix: cfg.Prefix,
		MaxLen: cfg.FanoutMaxLen,
		OnRetry: func(err error, try int) {
			mt.AppendErrors.Inc()
			log.Warn("broadcast batch failed", "err", err, "try", try)
		},
	})
	err = consume.Run(ctx, consume.Config{
		Brokers:     cfg.Brokers,
		Topic:       cfg.Topic,
		Group:       cfg.Group,
		ClientID:    cfg.WorkerID,
		BatchSize:   cfg.BatchSize,
		BatchLinger: cfg.BatchLinger,
		// Leave part of the deadline to the commit and the group leave.
		DrainTimeout: cfg.Timeout * 3 / 4,
		// A revoke must finish well within max.poll.interval.ms.
		RevokeTimeout: min(cfg.Timeout, time.Minute),
		Failpoint:     fp,
		Metrics:       mt,
		Extra: kafka.ConfigMap{
			"session.timeout.ms": int(cfg.SessionTimeout.Milliseconds()),
			"fetch.wait.max.ms":  max(int(cfg.FetchWait.Milliseconds()), 1),
			"fetch.min.bytes":    max(cfg.FetchMinBytes, 1),
		},
		Tracer: tp,
		Reachable: func(ctx context.Context) error {
			if err := pool.Ping(ctx); err != nil {
				return fmt.Errorf("postgres: %w", err)
			}
			if err := rdb.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("redis: %w", err)
			}
			return nil
		},
		StepAsideAfter: cfg.StepAsideAfter,
	}, store.NewCombiner(st, 4*max(cfg.BatchSize, 1), cfg.TxInterval), bc, log)
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	log.Info("stopped")
	return nil
}

// ensureTopic creates the topic with KAFKA_PARTITIONS partitions and
// KAFKA_REPLICATION replicas when it does not exist.
func ensureTopic(ctx context.Context, cfg Config) error {
	admin, err := kafka.NewAdminClient(&kafka.ConfigMap{
		"bootstrap.servers":   cfg.Brokers,
		"enable.metrics.push": false,
	})
	if err != nil {
		return fmt.Errorf("create kafka admin client: %w", err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := admin.CreateTopics(ctx, []kafka.TopicSpecification{{
		Topic:             cfg.Topic,
		NumPartitions:     cfg.Partitions,
		ReplicationFactor: cfg.Replication,
	}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", cfg.Topic, err)
	}
	for _, r := range res {
		if code := r.Error.Code(); code != kafka.ErrNoError && code != kafka.ErrTopicAlreadyExists {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Error)
		}
	}
	return nil
}
