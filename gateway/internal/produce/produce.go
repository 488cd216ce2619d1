// Package produce sends chat messages to the Kafka intake log with an
// idempotent librdkafka producer and reports, per message, when the record
// is durably in the log.
//
// Every record is keyed by its room id (decimal) so a room's messages stay in
// one partition; the value is the JSON of message.Message without seq. Send
// never blocks on the broker: a full local queue is refused at once with
// ErrQueueFull (backpressure), and the outcome of an accepted record arrives
// later through its callback.
package produce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"rooms/gateway/internal/metrics"
	"rooms/shared/message"
	"rooms/shared/retry"
	"rooms/shared/tracing"
)

// Errors reported by Send and by delivery callbacks.
var (
	// ErrQueueFull means the local producer queue is full: the record was not
	// accepted, and the caller should answer "unavailable".
	ErrQueueFull = errors.New("producer queue is full")
	// ErrUnavailable means the producer cannot accept records right now
	// (being recreated after a fatal error, or closed).
	ErrUnavailable = errors.New("producer is unavailable")
	// ErrDelivery means the record may or may not be in the log (the delivery
	// report failed or timed out); a retry with the same client_msg_id is safe.
	ErrDelivery = errors.New("delivery failed, outcome unknown")
)

// Config configures the producer.
type Config struct {
	// Brokers is the bootstrap list, "host:port,host:port".
	Brokers string
	Topic   string
	// Linger is how long librdkafka waits to batch records (at most 5 ms).
	Linger time.Duration
	// Compression is the codec of the record batches ("": lz4).
	Compression string
	// MessageTimeout bounds how long a record may wait for delivery before
	// its report fails.
	MessageTimeout time.Duration
	// QueueMax bounds the records held locally (queue.buffering.max.messages).
	QueueMax int
	// Extra is merged last into the librdkafka configuration.
	Extra kafka.ConfigMap
	// Metrics counts delivery and fatal errors (nil: counted nowhere).
	Metrics *metrics.Produce
}

func (c Config) withDefaults() Config {
	if c.Linger <= 0 {
		c.Linger = 2 * time.Millisecond
	}
	if c.Linger > 5*time.Millisecond {
		c.Linger = 5 * time.Millisecond
	}
	if c.Compression == "" {
		c.Compression = "lz4"
	}
	if c.MessageTimeout <= 0 {
		c.MessageTimeout = 30 * time.Second
	}
	if c.QueueMax <= 0 {
		c.QueueMax = 100000
	}
	if c.Topic == "" {
		c.Topic = message.DefaultTopic
	}
	if c.Metrics == nil {
		c.Metrics = metrics.Discard().Produce
	}
	return c
}

// Compressions are the codecs the producer takes.
var Compressions = []string{"none", "gzip", "snappy", "lz4", "zstd"}

func (c Config) configMap() *kafka.ConfigMap {
	m := kafka.ConfigMap{
		"bootstrap.servers":            c.Brokers,
		"enable.idempotence":           true,
		"acks":                         "all",
		"linger.ms":                    int(c.Linger / time.Millisecond),
		"compression.type":             c.Compression,
		"message.timeout.ms":           int(c.MessageTimeout / time.Millisecond),
		"queue.buffering.max.messages": c.QueueMax,
		"enable.metrics.push":          false,
		"go.delivery.reports":          true,
		"go.logs.channel.enable":       false,
	}
	for k, v := range c.Extra {
		m[k] = v
	}
	return &m
}

// Callback receives the outcome of one record: nil once it is in the log,
// ErrDelivery otherwise. It runs on the producer's event goroutine and must
// not block.
type Callback func(err error)

// Producer is a Kafka producer that survives fatal errors by recreating its
// librdkafka instance. It is safe for concurrent use.
type Producer struct {
	cfg    Config
	logger *slog.Logger

	mu     sync.RWMutex // guards cur and closed; Send holds it shared while producing
	cur    *instance
	closed bool

	ready    atomic.Bool
	fatal    chan struct{} // signalled by an instance's event loop on a fatal error
	wg       sync.WaitGroup
	stop     chan struct{}
	stopOnce sync.Once
}

type instance struct {
	p    *kafka.Producer
	done chan struct{} // closed when its event loop has ended
}

// New creates the producer. It does not wait for the brokers.
func New(cfg Config, logger *slog.Logger) (*Producer, error) {
	cfg = cfg.withDefaults()
	p := &Producer{cfg: cfg, logger: logger, fatal: make(chan struct{}, 1), stop: make(chan struct{})}
	inst, err := p.newInstance()
	if err != nil {
		return nil, err
	}
	p.cur = inst
	p.ready.Store(true)
	p.wg.Add(1)
	go p.supervise()
	return p, nil
}

func (p *Producer) newInstance() (*instance, error) {
	kp, err := kafka.NewProducer(p.cfg.configMap())
	if err != nil {
		return nil, fmt.Errorf("create kafka producer: %w", err)
	}
	inst := &instance{p: kp, done: make(chan struct{})}
	p.wg.Add(1)
	go p.events(inst)
	return inst, nil
}

// events drains one instance's event channel until it is closed; delivery
// reports resolve the record's callback carried in Opaque.
func (p *Producer) events(inst *instance) {
	defer p.wg.Done()
	defer close(inst.done)
	for ev := range inst.p.Events() {
		switch e := ev.(type) {
		case *kafka.Message:
			cb, _ := e.Opaque.(Callback)
			if cb == nil {
				continue
			}
			if e.TopicPartition.Error != nil {
				p.cfg.Metrics.DeliveryErrors.Inc()
				p.logger.Warn("kafka delivery failed", "error", e.TopicPartition.Error.Error())
				cb(ErrDelivery)
				continue
			}
			cb(nil)
		case kafka.Error:
			if e.IsFatal() {
				p.cfg.Metrics.Fatal.Inc()
				p.logger.Error("kafka producer fatal error", "error", e.Error())
				p.ready.Store(false)
				select {
				case p.fatal <- struct{}{}:
				default:
				}
				continue
			}
			p.logger.Warn("kafka producer error", "error", e.Error(), "code", e.Code().String())
		}
	}
}

// supervise recreates the librdkafka instance after a fatal error, with
// capped backoff when creation itself fails.
func (p *Producer) supervise() {
	defer p.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		case <-p.fatal:
		}
		for try := 1; ; try++ {
			inst, err := p.newInstance()
			if err == nil {
				p.mu.Lock()
				if p.closed {
					p.mu.Unlock()
					inst.p.Close()
					return
				}
				old := p.cur
				p.cur = inst
				p.mu.Unlock()
				p.ready.Store(true)
				p.logger.Info("kafka producer recreated after fatal error")
				// Records still held by the dead instance fail with an
				// unknown outcome; purging makes their reports arrive now.
				_ = old.p.Purge(kafka.PurgeQueue | kafka.PurgeInFlight)
				old.p.Close()
				break
			}
			p.logger.Error("recreate kafka producer", "error", err)
			select {
			case <-p.stop:
				return
			case <-time.After(retry.Backoff(100*time.Millisecond, 5*time.Second, try)):
			}
		}
	}
}

// Ready reports whether the producer can accept records (for /readyz).
func (p *Producer) Ready() bool { return p.ready.Load() }

// Len returns how many records the producer holds: queued or in flight,
// waiting for their delivery report (0 once closed).
func (p *Producer) Len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return 0
	}
	return p.cur.p.Len()
}

// Send hands m (its Seq is ignored) to the producer. It returns ErrQueueFull
// or ErrUnavailable without calling done when the record is refused;
// otherwise done is called exactly once with the delivery outcome.
func (p *Producer) Send(m message.Message, done Callback) error {
	return p.send(m, nil, done)
}

// SendContext is Send with the trace context of ctx's span, if it has one,
// in the record's traceparent header (W3C), for the worker to link its
// batch to. Without a span context the record is Send's.
func (p *Producer) SendContext(ctx context.Context, m message.Message, done Callback) error {
	var headers []kafka.Header
	if tp := tracing.Traceparent(ctx); tp != "" {
		headers = []kafka.Header{{Key: tracing.TraceparentKey, Value: []byte(tp)}}
	}
	return p.send(m, headers, done)
}

func (p *Producer) send(m message.Message, headers []kafka.Header, done Callback) error {
	roomID, err := strconv.ParseInt(m.RoomID, 10, 64)
	if err != nil {
		return fmt.Errorf("room id %q: %w", m.RoomID, err)
	}
	m.Seq = 0
	value, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed || !p.ready.Load() {
		return ErrUnavailable
	}
	topic := p.cfg.Topic
	err = p.cur.p.Produce(&kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny},
		Key:            []byte(strconv.FormatInt(roomID, 10)),
		Value:          value,
		Headers:        headers,
		Opaque:         done,
	}, nil)
	if err != nil {
		var kerr kafka.Error
		if errors.As(err, &kerr) && kerr.Code() == kafka.ErrQueueFull {
			return ErrQueueFull
		}
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// Produce sends m and waits for its delivery report or ctx. A ctx error
// leaves the outcome unknown.
func (p *Producer) Produce(ctx context.Context, m message.Message) error {
	res := make(chan error, 1)
	if err := p.Send(m, func(err error) { res <- err }); err != nil {
		return err
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return fmt.Errorf("wait for delivery: %w", ctx.Err())
	}
}

// Close flushes outstanding records until ctx's deadline, then closes the
// producer; records still unsent fail with ErrDelivery.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	inst := p.cur
	p.mu.Unlock()
	p.stopOnce.Do(func() { close(p.stop) })
	p.ready.Store(false)

	var err error
	for inst.p.Len() > 0 {
		if ctx.Err() != nil {
			err = fmt.Errorf("flush producer: %d records left: %w", inst.p.Len(), ctx.Err())
			break
		}
		inst.p.Flush(100)
	}
	_ = inst.p.Purge(kafka.PurgeQueue | kafka.PurgeInFlight)
	inst.p.Close()
	p.wg.Wait()
	return err
}

// EnsureTopic creates topic with the given partitions and replication
// factor; a topic that already exists is fine.
func EnsureTopic(ctx context.Context, brokers, topic string, partitions, replication int) error {
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{
		"bootstrap.servers":   brokers,
		"enable.metrics.push": false,
	})
	if err != nil {
		return fmt.Errorf("create kafka admin client: %w", err)
	}
	defer ac.Close()
	res, err := ac.CreateTopics(ctx, []kafka.TopicSpecification{{
		Topic:             topic,
		NumPartitions:     partitions,
		ReplicationFactor: replication,
	}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	for _, r := range res {
		if c := r.Error.Code(); c != kafka.ErrNoError && c != kafka.ErrTopicAlreadyExists {
			return fmt.Errorf("create topic %s: %w", topic, r.Error)
		}
	}
	return nil
}
