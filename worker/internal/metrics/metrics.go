// Package metrics defines the worker's Prometheus metrics. New registers
// them on the process's registry (built in package app), which hands them
// to the consumer, the store and the broadcaster; components given none use
// Discard's.
//
// Every metric is named rooms_worker_… and carries only labels with few
// values (the partition, a bounded number; a retry's kind): never a user or
// a room. Label values known in advance are resolved at construction, so
// every series is exported from the start.
package metrics

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Worker is every metric of the worker.
type Worker struct {
	// Records counts records handed to partition goroutines.
	Records prometheus.Counter
	// Pauses counts partitions paused because their goroutine fell behind.
	Pauses prometheus.Counter
	// Abandoned counts batches given up uncommitted (revoke or shutdown
	// deadline).
	Abandoned prometheus.Counter

	// BatchSize is records per batch; BatchSeconds the time from the
	// first record of a batch collected to its offsets stored.
	BatchSize, BatchSeconds prometheus.Histogram
	// StoreSeconds is the time to store one batch in PostgreSQL, retries
	// included; CommitSeconds that of the round trip that commits its
	// transaction (the writes and the COMMIT, pipelined).
	StoreSeconds, CommitSeconds prometheus.Histogram
	// Inserted counts new messages stored, Duplicates records already
	// stored (redelivered), DeadLetters records written to dead_letters.
	Inserted, Duplicates, DeadLetters prometheus.Counter
	// RetriesTransient and RetriesFailed count failed store tries.
	RetriesTransient, RetriesFailed prometheus.Counter

	// AppendSeconds is the time to append one batch to the fan-out
	// streams, retries included; AppendErrors counts failed tries.
	AppendSeconds prometheus.Histogram
	AppendErrors  prometheus.Counter

	// SteppedAside is 1 while the worker is out of the consumer group
	// because it cannot reach PostgreSQL or Redis, 0 otherwise.
	SteppedAside prometheus.Gauge

	lag *prometheus.GaugeVec
	// lagChildren caches the per-partition gauges (the poll goroutine
	// sets them; the mutex makes Discard's shared use safe too).
	mu          sync.Mutex
	lagChildren map[int32]prometheus.Gauge
}

// New creates the worker's metrics and registers them on reg; nil
// registers them nowhere (Discard).
func New(reg prometheus.Registerer) *Worker {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
		reg.MustRegister(h)
		return h
	}
	seconds := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rooms_worker_store_retries_total",
		Help: "Failed tries to store a batch, by kind (transient: retried without limit; failed: counts towards MAX_ATTEMPTS).",
	}, []string{"kind"})
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "rooms_worker_consumer_lag",
		Help: "Records of an assigned partition not processed yet: high watermark minus the next offset to store.",
	}, []string{"partition"})
	aside := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rooms_worker_stepped_aside",
		Help: "1 while the worker has left the consumer group because it cannot reach PostgreSQL or Redis (STEP_ASIDE_AFTER), 0 otherwise.",
	})
	reg.MustRegister(retries, lag, aside)
	return &Worker{
		Records:   counter("rooms_worker_records_consumed_total", "Kafka records handed to partition goroutines."),
		Pauses:    counter("rooms_worker_partition_pauses_total", "Partitions paused because their goroutine fell behind."),
		Abandoned: counter("rooms_worker_batches_abandoned_total", "Batches given up uncommitted at a revoke or shutdown deadline (the next owner redoes them)."),
		BatchSize: histogram("rooms_worker_batch_size", "Records per batch.",
			[]float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}),
		BatchSeconds: histogram("rooms_worker_batch_seconds",
			"Time from a batch's first record to its offsets stored (store, broadcast, offsets).", seconds),
		StoreSeconds: histogram("rooms_worker_store_seconds",
			"Time to store one batch in PostgreSQL, retries included.", seconds),
		CommitSeconds: histogram("rooms_worker_pg_commit_seconds",
			"Time of the round trip that commits one batch's PostgreSQL transaction: its writes and the COMMIT, pipelined.", seconds),
		Inserted:         counter("rooms_worker_messages_stored_total", "New messages stored in PostgreSQL."),
		Duplicates:       counter("rooms_worker_duplicates_total", "Records already stored (redelivered or retried by a client), not stored again."),
		DeadLetters:      counter("rooms_worker_dead_letters_total", "Records written to the dead_letters table."),
		RetriesTransient: retries.WithLabelValues("transient"),
		RetriesFailed:    retries.WithLabelValues("failed"),
		AppendSeconds: histogram("rooms_worker_broadcast_seconds",
			"Time to append one batch to the Redis fan-out streams, retries included.", seconds),
		AppendErrors: counter("rooms_worker_broadcast_errors_total", "Failed tries to append a batch to the fan-out streams (retried)."),
		SteppedAside: aside,
		lag:          lag,
		lagChildren:  map[int32]prometheus.Gauge{},
	}
}

// Discard returns metrics registered nowhere.
func Discard() *Worker { return New(nil) }

// SetLag sets partition's consumer lag.
func (m *Worker) SetLag(partition int32, lag int64) {
	m.mu.Lock()
	g, ok := m.lagChildren[partition]
	if !ok {
		g = m.lag.WithLabelValues(strconv.Itoa(int(partition)))
		m.lagChildren[partition] = g
	}
	m.mu.Unlock()
	g.Set(float64(max(lag, 0)))
}

// DropLag removes partition's lag series (the partition was revoked).
func (m *Worker) DropLag(partition int32) {
	m.mu.Lock()
	delete(m.lagChildren, partition)
	m.mu.Unlock()
	m.lag.DeleteLabelValues(strconv.Itoa(int(partition)))
}
