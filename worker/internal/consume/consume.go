// Package consume runs the worker's Kafka consumer: one consumer per process
// in the workers' group, one goroutine per assigned partition, one batch at a
// time per partition. A batch is stored in PostgreSQL, appended to the Redis
// fan-out streams, and only then are its offsets stored for commit.
//
// The poll loop never blocks on a partition: it hands records to each
// partition goroutine through a bounded channel. When a channel is full (the
// goroutine is busy or stuck retrying a database or Redis that is down), the
// partition is paused and the records not handed over are dropped; when the
// goroutine has caught up, the partition is resumed and seeked back to the
// first record that was dropped. librdkafka purges a paused partition's
// prefetched records and, on resume, fetches from the last record returned to
// the application + 1, which is past the dropped ones; hence the seek. The loop
// keeps polling throughout, so max.poll.interval.ms is never exceeded.
//
// Rebalancing is eager (roundrobin): on revoke the callback stops every
// partition goroutine, waits for its in-flight batch to be stored, broadcast
// and its offsets stored (at most RevokeTimeout; after that the batch is
// abandoned uncommitted and the next owner redoes it, which de-duplication
// makes harmless), commits synchronously, then unassigns. Offsets are
// committed by librdkafka's auto-commit (only what was stored) and
// synchronously on revoke and at shutdown.
package consume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"rooms/shared/message"
	"rooms/shared/tracing"
	"rooms/worker/internal/metrics"
	"rooms/worker/internal/store"
)

// Saver stores a batch of records and returns the stored messages.
type Saver interface {
	Save(ctx context.Context, recs []store.Record) (store.Result, error)
}

// Appender appends stored messages to the fan-out streams.
type Appender interface {
	Append(ctx context.Context, msgs []message.Message) error
}

// Config configures the consumer.
type Config struct {
	Brokers  string
	Topic    string
	Group    string
	ClientID string
	// BatchSize is the most records in one batch (default 500).
	BatchSize int
	// BatchLinger is how long a batch waits for more records after its
	// first one (default 5ms).
	BatchLinger time.Duration
	// QueueSize is the capacity of each partition's channel (default
	// 2*BatchSize); a full channel pauses the partition.
	QueueSize int
	// RevokeTimeout bounds how long a revoke waits for in-flight batches
	// (default 15s; keep it well under max.poll.interval.ms).
	RevokeTimeout time.Duration
	// DrainTimeout bounds how long shutdown waits for in-flight batches
	// (default 15s).
	DrainTimeout time.Duration
	// Extra librdkafka properties, applied last.
	Extra kafka.ConfigMap
	// Failpoint, for fault tests only (nil: off).
	Failpoint *Failpoint
	// Metrics counts records, batches and the lag per partition (nil:
	// counted nowhere).
	Metrics *metrics.Worker
	// Tracer makes a rooms.batch span per batch, linked to the span of each
	// record's traceparent header, with store and broadcast child spans
	// (nil: a no-op provider, no spans).
	Tracer trace.TracerProvider

	// Reachable checks, once a second, that the worker reaches what a
	// batch needs (PostgreSQL and Redis). When it has failed without a
	// break for StepAsideAfter, the worker leaves the consumer group, so
	// that workers that do reach them take its partitions instead of
	// leaving those rooms stalled behind its hung batches; it joins again
	// at the first check that passes. Nil or a zero StepAsideAfter: never.
	Reachable      func(ctx context.Context) error
	StepAsideAfter time.Duration
}

// TracedAppender is an Appender that can carry each message's traceparent
// into its fan-out entry (broadcast.Broadcaster.AppendTraced).
type TracedAppender interface {
	AppendTraced(ctx context.Context, msgs []message.Message, traceparents map[string]string) error
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.BatchLinger <= 0 {
		c.BatchLinger = 5 * time.Millisecond
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 2 * c.BatchSize
	}
	if c.RevokeTimeout <= 0 {
		c.RevokeTimeout = 15 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 15 * time.Second
	}
	if c.Metrics == nil {
		c.Metrics = metrics.Discard()
	}
	c.Tracer = tracing.OrNoop(c.Tracer)
}

// consumer is the state of one Run. parts is only touched by the poll
// goroutine (the rebalance callback runs inside Poll).
type consumer struct {
	cfg   Config
	log   *slog.Logger
	saver Saver
	app   Appender
	kc    *kafka.Consumer
	parts map[int32]*partition
	trace trace.Tracer
	// base is the parent of the partition goroutines' contexts: not the
	// caller's, so that shutdown lets in-flight batches finish.
	base context.Context
	wg   sync.WaitGroup

	// unreachable is when the Reachable checks began to fail (UnixNano;
	// 0 while they pass), lastErr the latest failure; aside is set while
	// the worker has left the group (poll goroutine only).
	unreachable atomic.Int64
	lastErr     atomic.Pointer[error]
	aside       bool
}

// partition is one assigned partition and its goroutine.
type partition struct {
	tp       kafka.TopicPartition
	in       chan *kafka.Message
	stop     chan struct{} // closed: finish the collected batch, then exit
	cancel   context.CancelFunc
	done     chan struct{}
	paused   bool
	resumeAt kafka.Offset // first record dropped while paused
	// next is the offset after the last batch whose offsets were stored
	// (-1 before the first), for the lag metric.
	next atomic.Int64
}

// Run consumes cfg.Topic until ctx ends, then finishes the in-flight
// batches (at most DrainTimeout), commits the stored offsets and closes the
// consumer so the group hands its partitions over at once.
func Run(ctx context.Context, cfg Config, saver Saver, app Appender, log *slog.Logger) error {
	cfg.defaults()
	conf := kafka.ConfigMap{
		"bootstrap.servers":             cfg.Brokers,
		"group.id":                      cfg.Group,
		"client.id":                     cfg.ClientID,
		"enable.auto.offset.store":      false,
		"enable.auto.commit":            true,
		"auto.commit.interval.ms":       1000,
		"auto.offset.reset":             "earliest",
		"partition.assignment.strategy": "roundrobin",
		"enable.metrics.push":           false,
		"enable.partition.eof":          false,
	}
	for k, v := range cfg.Extra {
		conf[k] = v
	}
	kc, err := kafka.NewConsumer(&conf)
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	c := &consumer{
		cfg: cfg, log: log, saver: saver, app: app, kc: kc,
		parts: map[int32]*partition{},
		base:  context.WithoutCancel(ctx),
		trace: cfg.Tracer.Tracer("rooms/worker/consume"),
	}
	if err := kc.SubscribeTopics([]string{cfg.Topic}, c.rebalance); err != nil {
		_ = kc.Close()
		return fmt.Errorf("subscribe to %s: %w", cfg.Topic, err)
	}
	log.Info("consumer started", "topic", cfg.Topic, "group", cfg.Group)
	if cfg.Reachable != nil && cfg.StepAsideAfter > 0 {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.checkReachable(ctx)
		}()
	}

	var runErr error
	var lagAt time.Time
	for ctx.Err() == nil && runErr == nil {
		switch e := kc.Poll(100).(type) {
		case *kafka.Message:
			c.dispatch(e)
		case kafka.Error:
			if e.IsFatal() {
				runErr = fmt.Errorf("consumer: %w", e)
				break
			}
			log.Warn("kafka error", "err", e.Error(), "code", e.Code().String())
		}
		c.resumeReady()
		if err := c.stepAside(); err != nil {
			runErr = err
		}
		if time.Since(lagAt) >= lagInterval {
			lagAt = time.Now()
			c.updateLag()
		}
	}

	// Shut down: let the in-flight batches finish, commit what they stored,
	// then leave the group (Close runs the revoke callback, which finds
	// nothing left to wait for). The commit and Close both wait on the
	// broker: one that does not answer (paused, cut off) would hold the
	// commit until librdkafka's socket timeout (60 s), and while a join is
	// still in progress (a SIGTERM right after start, during a rebalance)
	// Close can wait for the whole rebalance timeout. So both run on a
	// goroutine of their own, one after the other, and past closeTimeout
	// the worker stops without them: the group notices the member gone
	// after the session timeout, and the next owner of its partitions
	// redoes what was not committed, which de-duplication makes harmless.
	c.stopAll(c.cfg.DrainTimeout)
	closed := make(chan error, 1)
	go func() {
		c.commit()
		closed <- kc.Close()
	}()
	select {
	case err := <-closed:
		if err != nil {
			log.Warn("close consumer", "err", err)
		}
	case <-time.After(closeTimeout):
		log.Warn("offset commit and consumer close did not finish; leaving the group to the session timeout", "waited", closeTimeout.String())
	}
	c.wg.Wait()
	log.Info("consumer stopped")
	return runErr
}

// checkReachable runs cfg.Reachable once a second until ctx ends and
// keeps c.unreachable up to date.
func (c *consumer) checkReachable(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.cfg.Reachable(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			c.unreachable.Store(0)
			continue
		}
		c.lastErr.Store(&err)
		c.unreachable.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// stepAside leaves the consumer group once the Reachable checks have
// failed for StepAsideAfter, and joins it again once one passes. Leaving
// revokes this worker's partitions (their hung batches are abandoned after
// asideRevokeTimeout, uncommitted, for the next owner to redo) and the
// group hands them to the other workers. It returns an error only when the
// consumer cannot join again.
func (c *consumer) stepAside() error {
	if c.cfg.Reachable == nil || c.cfg.StepAsideAfter <= 0 {
		return nil
	}
	since := c.unreachable.Load()
	switch {
	case !c.aside && since != 0 && time.Since(time.Unix(0, since)) >= c.cfg.StepAsideAfter:
		var cause string
		if e := c.lastErr.Load(); e != nil {
			cause = (*e).Error()
		}
		c.log.Warn("PostgreSQL or Redis unreachable: leaving the consumer group so that other workers take this worker's partitions",
			"unreachable_for", time.Since(time.Unix(0, since)).Round(time.Millisecond).String(), "err", cause)
		if err := c.kc.Unsubscribe(); err != nil {
			c.log.Error("leave the consumer group", "err", err)
			return nil
		}
		c.aside = true
		c.cfg.Metrics.SteppedAside.Set(1)
	case c.aside && since == 0:
		c.log.Info("PostgreSQL and Redis reachable again: joining the consumer group")
		if err := c.kc.SubscribeTopics([]string{c.cfg.Topic}, c.rebalance); err != nil {
			return fmt.Errorf("subscribe to %s again: %w", c.cfg.Topic, err)
		}
		c.aside = false
		c.cfg.Metrics.SteppedAside.Set(0)
	}
	return nil
}

// asideRevokeTimeout is how long the revoke that stepping aside causes
// waits for in-flight batches: they are waiting on what the worker cannot
// reach, so it does not wait for RevokeTimeout.
const asideRevokeTimeout = time.Second

// closeTimeout bounds how long shutdown waits for the consumer to leave
// the group.
const closeTimeout = 5 * time.Second

// rebalance handles assignments and revocations (eager protocol).
func (c *consumer) rebalance(kc *kafka.Consumer, ev kafka.Event) error {
	switch e := ev.(type) {
	case kafka.AssignedPartitions:
		if err := kc.Assign(e.Partitions); err != nil {
			c.log.Error("assign partitions", "err", err)
			return err
		}
		// A partition paused before an earlier revoke stays paused in
		// librdkafka across a reassignment.
		if err := kc.Resume(e.Partitions); err != nil {
			c.log.Warn("resume assigned partitions", "err", err)
		}
		for _, tp := range e.Partitions {
			c.start(tp)
		}
		c.log.Info("partitions assigned", "partitions", partitionIDs(e.Partitions))
	case kafka.RevokedPartitions:
		timeout := c.cfg.RevokeTimeout
		if c.aside {
			timeout = asideRevokeTimeout
		}
		c.stopAll(timeout)
		if kc.AssignmentLost() {
			c.log.Warn("assignment lost: offsets not committed", "partitions", partitionIDs(e.Partitions))
		} else {
			c.commit()
		}
		if err := kc.Unassign(); err != nil {
			c.log.Error("unassign partitions", "err", err)
			return err
		}
		for _, tp := range e.Partitions {
			c.cfg.Metrics.DropLag(tp.Partition)
		}
		c.log.Info("partitions revoked", "partitions", partitionIDs(e.Partitions))
	}
	return nil
}

// start launches the goroutine of a newly assigned partition.
func (c *consumer) start(tp kafka.TopicPartition) {
	ctx, cancel := context.WithCancel(c.base)
	p := &partition{
		tp:     kafka.TopicPartition{Topic: tp.Topic, Partition: tp.Partition},
		in:     make(chan *kafka.Message, c.cfg.QueueSize),
		stop:   make(chan struct{}),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	p.next.Store(-1)
	c.parts[tp.Partition] = p
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(p.done)
		defer cancel()
		c.runPartition(ctx, p)
	}()
}

// stopAll stops every partition goroutine: each finishes the batch it holds
// and exits. After timeout the remaining batches are abandoned (their
// offsets are not stored, so whoever owns the partition next redoes them).
func (c *consumer) stopAll(timeout time.Duration) {
	if len(c.parts) == 0 {
		return
	}
	for _, p := range c.parts {
		close(p.stop)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for id, p := range c.parts {
		select {
		case <-p.done:
		case <-deadline.C:
			c.log.Warn("in-flight batch abandoned", "partition", id, "timeout", timeout.String())
			p.cancel()
			<-p.done
			// The timer has fired: abandon the others at once.
			deadline.Reset(0)
		}
		delete(c.parts, id)
	}
}

// commit commits the stored offsets synchronously.
func (c *consumer) commit() {
	if _, err := c.kc.Commit(); err != nil {
		var ke kafka.Error
		if errors.As(err, &ke) && ke.Code() == kafka.ErrNoOffset {
			return
		}
		c.log.Warn("commit offsets", "err", err)
	}
}

// dispatch hands a record to its partition's goroutine, or pauses the
// partition when the goroutine's channel is full.
func (c *consumer) dispatch(m *kafka.Message) {
	p := c.parts[m.TopicPartition.Partition]
	if p == nil || p.paused {
		// Not ours (any more), or prefetched before the pause: dropped,
		// the seek on resume fetches it again.
		return
	}
	select {
	case p.in <- m:
		c.cfg.Metrics.Records.Inc()
	default:
		c.cfg.Metrics.Pauses.Inc()
		if err := c.kc.Pause([]kafka.TopicPartition{p.tp}); err != nil {
			c.log.Error("pause partition", "partition", p.tp.Partition, "err", err)
		}
		p.paused = true
		p.resumeAt = m.TopicPartition.Offset
		c.log.Info("partition paused", "partition", p.tp.Partition, "resume_at", int64(p.resumeAt))
	}
}

// resumeReady resumes the paused partitions whose goroutine has drained half
// its channel, seeking back to the first record not handed over.
func (c *consumer) resumeReady() {
	for _, p := range c.parts {
		if !p.paused || len(p.in) > cap(p.in)/2 {
			continue
		}
		// Resume first, then seek: Seek on an active partition blocks until
		// the fetcher moved, and guarantees no record fetched for the old
		// position reaches Poll afterwards.
		if err := c.kc.Resume([]kafka.TopicPartition{p.tp}); err != nil {
			c.log.Error("resume partition", "partition", p.tp.Partition, "err", err)
			continue
		}
		tp := p.tp
		tp.Offset = p.resumeAt
		if _, err := c.kc.SeekPartitions([]kafka.TopicPartition{tp}); err != nil {
			// Without the seek, records would be skipped: stay paused
			// and try again on the next turn.
			c.log.Error("seek partition", "partition", p.tp.Partition, "offset", int64(p.resumeAt), "err", err)
			_ = c.kc.Pause([]kafka.TopicPartition{p.tp})
			continue
		}
		p.paused = false
		c.log.Info("partition resumed", "partition", p.tp.Partition, "offset", int64(p.resumeAt))
	}
}

// runPartition processes the partition's records one batch at a time.
func (c *consumer) runPartition(ctx context.Context, p *partition) {
	log := c.log.With("partition", p.tp.Partition)
	for {
		batch := c.collect(p)
		if len(batch) == 0 {
			return
		}
		if err := c.process(ctx, p, batch); err != nil {
			c.cfg.Metrics.Abandoned.Inc()
			log.Warn("batch abandoned", "first_offset", int64(batch[0].TopicPartition.Offset), "records", len(batch), "err", err)
			return
		}
	}
}

// collect waits for a first record (or stop), then takes more until the
// batch is full or BatchLinger has passed.
func (c *consumer) collect(p *partition) []*kafka.Message {
	var first *kafka.Message
	select {
	case <-p.stop:
		return nil
	case first = <-p.in:
	}
	batch := make([]*kafka.Message, 1, c.cfg.BatchSize)
	batch[0] = first
	linger := time.NewTimer(c.cfg.BatchLinger)
	defer linger.Stop()
	for len(batch) < c.cfg.BatchSize {
		select {
		case m := <-p.in:
			batch = append(batch, m)
		case <-linger.C:
			return batch
		case <-p.stop:
			return batch
		}
	}
	return batch
}

// process stores, broadcasts and then stores the offsets of one batch.
// It returns an error only when ctx ends first.
func (c *consumer) process(ctx context.Context, p *partition, batch []*kafka.Message) (err error) {
	mt := c.cfg.Metrics
	start := time.Now()
	ctx, span := c.trace.Start(ctx, "rooms.batch", trace.WithSpanKind(trace.SpanKindConsumer))
	defer func() { endSpan(span, err) }()
	var tps map[string]string
	if span.IsRecording() {
		span.SetAttributes(attribute.Int64("messaging.kafka.partition", int64(p.tp.Partition)),
			attribute.Int64("messaging.kafka.offset", int64(batch[0].TopicPartition.Offset)),
			attribute.Int("messaging.batch.message_count", len(batch)))
		tps = link(span, batch)
	}
	mt.BatchSize.Observe(float64(len(batch)))
	recs := make([]store.Record, len(batch))
	for i, m := range batch {
		recs[i] = store.Record{
			Topic:     *m.TopicPartition.Topic,
			Partition: m.TopicPartition.Partition,
			Offset:    int64(m.TopicPartition.Offset),
			Key:       m.Key,
			Value:     m.Value,
		}
	}
	sctx, sspan := c.trace.Start(ctx, "store")
	res, err := c.saver.Save(sctx, recs)
	endSpan(sspan, err)
	if err != nil {
		return err
	}
	saved := time.Now()
	mt.StoreSeconds.Observe(saved.Sub(start).Seconds())
	mt.Inserted.Add(float64(res.Inserted))
	mt.DeadLetters.Add(float64(res.DeadLetters))
	mt.Duplicates.Add(float64(max(len(batch)-res.Inserted-res.DeadLetters, 0)))
	c.cfg.Failpoint.Hit(FailAfterCommit)
	bctx, bspan := c.trace.Start(ctx, "broadcast")
	if ta, ok := c.app.(TracedAppender); ok && len(tps) > 0 {
		err = ta.AppendTraced(bctx, res.Messages, tps)
	} else {
		err = c.app.Append(bctx, res.Messages)
	}
	endSpan(bspan, err)
	if err != nil {
		return err
	}
	mt.AppendSeconds.Observe(time.Since(saved).Seconds())
	next := p.tp
	next.Offset = batch[len(batch)-1].TopicPartition.Offset + 1
	if _, err := c.kc.StoreOffsets([]kafka.TopicPartition{next}); err != nil {
		return fmt.Errorf("store offset %d: %w", int64(next.Offset), err)
	}
	p.next.Store(int64(next.Offset))
	mt.BatchSeconds.Observe(time.Since(start).Seconds())
	c.log.Debug("batch done", "partition", p.tp.Partition, "records", len(batch),
		"inserted", res.Inserted, "dead_letters", res.DeadLetters, "next_offset", int64(next.Offset),
		tracing.LogAttr(span))
	return nil
}

// link adds to span a link to the span of each record's traceparent header
// and returns the traceparents by message id, for the fan-out entries.
func link(span trace.Span, batch []*kafka.Message) map[string]string {
	tps := map[string]string{}
	for _, m := range batch {
		for _, h := range m.Headers {
			if h.Key != tracing.TraceparentKey {
				continue
			}
			sc := tracing.SpanContext(string(h.Value))
			if !sc.IsValid() {
				break
			}
			span.AddLink(trace.Link{SpanContext: sc})
			var v struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(m.Value, &v) == nil && v.ID != "" {
				tps[v.ID] = string(h.Value)
			}
			break
		}
	}
	return tps
}

// endSpan ends span, marking it failed when err is not nil.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// lagInterval is how often the poll loop updates the lag metric.
const lagInterval = time.Second

// updateLag sets each assigned partition's lag: its high watermark, as of
// the last fetch (GetWatermarkOffsets reads librdkafka's cache, no broker
// round trip), minus the next offset to store. Before a partition's first
// batch, the consumer's position stands in for it (or, for an empty
// partition, its high watermark); a partition with none of these yet is
// skipped.
func (c *consumer) updateLag() {
	for id, p := range c.parts {
		low, high, err := c.kc.GetWatermarkOffsets(*p.tp.Topic, id)
		if err != nil || high < 0 {
			continue
		}
		next := p.next.Load()
		if next < 0 {
			pos, err := c.kc.Position([]kafka.TopicPartition{p.tp})
			switch {
			case err == nil && len(pos) == 1 && pos[0].Offset >= 0:
				next = int64(pos[0].Offset)
			case low == high:
				next = high // an empty partition: nothing to process
			default:
				continue
			}
		}
		c.cfg.Metrics.SetLag(id, high-next)
	}
}

func partitionIDs(tps []kafka.TopicPartition) []int32 {
	ids := make([]int32, len(tps))
	for i, tp := range tps {
		ids[i] = tp.Partition
	}
	return ids
}
