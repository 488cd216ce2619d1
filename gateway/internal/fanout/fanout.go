// Package fanout reads the Redis fan-out streams every gateway listens to
// and hands their entries, in order, to the gateway's local delivery.
//
// One Reader runs per gateway. It reads all message.FanoutStreams with
// XREAD BLOCK, starting at the streams' last entries when it starts and then
// always from the last entry id it processed (never "$" after an error), so
// a Redis hiccup delays entries but loses none that are still in the stream.
//
// Messages are sequenced per room. The Reader only sequences rooms that are
// tracked (rooms with at least one local socket, see Track); for those it
// remembers the last seq delivered, drops duplicates (seq ≤ last: workers may
// append a stored message more than once) and repairs a seq jump by
// backfilling the missing seqs from PostgreSQL before delivering the later
// message. Messages of untracked rooms are dropped. Presence and typing
// entries are passed through as they come.
package fanout

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

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"rooms/gateway/internal/metrics"
	"rooms/shared/message"
	"rooms/shared/retry"
	"rooms/shared/tracing"
)

// Store reads stored messages, for gap repair.
type Store interface {
	// MessagesAfter returns up to limit messages of roomID with seq >
	// afterSeq, ascending.
	MessagesAfter(ctx context.Context, roomID, afterSeq int64, limit int) ([]message.Message, error)
}

// Sink receives what the Reader delivers. Its methods are called from the
// Reader's goroutine, one at a time, and must not block.
type Sink interface {
	// Messages delivers msgs of roomID: ascending, each newer than
	// everything delivered before for that room while it stayed tracked,
	// and contiguous unless gap repair failed (receivers check their own
	// continuity).
	Messages(roomID int64, msgs []message.Message)
	Presence(roomID int64, p message.Presence)
	Typing(roomID int64, t message.Typing)
}

// Options tune a Reader; zero values mean the defaults.
type Options struct {
	// Block is how long one XREAD waits for entries (default 2 s); it
	// bounds how long Run takes to return after ctx ends.
	Block time.Duration
	// Count is the most entries read per stream per call (default 100).
	// Keep it below the per-connection send queue: a catch-up after a
	// Redis outage hands a room up to Count messages at once.
	Count int64
	// BackfillPage is the page size of gap repair queries (default 500).
	BackfillPage int
	// Metrics counts entries, read lag, gap repairs and duplicates (nil:
	// counted nowhere).
	Metrics *metrics.Fanout
	// Tracer makes a rooms.deliver span for each message entry that carries
	// a traceparent (tracing.StreamField) and is handed to local sockets
	// (nil: a no-op provider, no spans).
	Tracer trace.TracerProvider
}

// Reader is one gateway's fan-out stream reader.
type Reader struct {
	rdb    redis.UniversalClient
	prefix string
	store  Store
	sink   Sink
	logger *slog.Logger
	opt    Options

	// mu guards rooms. The Reader's goroutine is the only one advancing a
	// tracked room's seq; Track and Untrack come from connection
	// goroutines. Sink is never called under mu, so a sink may call Track
	// or Untrack under its own locks.
	mu    sync.Mutex
	rooms map[int64]int64

	ready  atomic.Bool
	tracer trace.Tracer
}

// New returns a Reader of the streams under prefix.
func New(rdb redis.UniversalClient, prefix string, store Store, sink Sink, logger *slog.Logger, opt Options) *Reader {
	if opt.Block <= 0 {
		opt.Block = 2 * time.Second
	}
	if opt.Count <= 0 {
		opt.Count = 100
	}
	if opt.BackfillPage <= 0 {
		opt.BackfillPage = 500
	}
	if opt.Metrics == nil {
		opt.Metrics = metrics.Discard().Fanout
	}
	return &Reader{
		rdb: rdb, prefix: prefix, store: store, sink: sink, logger: logger, opt: opt, rooms: map[int64]int64{},
		tracer: tracing.OrNoop(opt.Tracer).Tracer("rooms/gateway/fanout"),
	}
}

// unknown marks a tracked room whose first message has not been seen yet.
const unknown = -1

// Track starts sequencing roomID, with an unknown state: the first message
// seen for it is delivered as is and becomes the baseline. Call it when the
// room's first local socket registers for delivery, before that socket
// reads the room's state from PostgreSQL: every message stored after that
// read is then appended after Track and delivered, and each socket skips
// what it already has. A room already tracked keeps its state.
func (r *Reader) Track(roomID int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.rooms[roomID]; !ok {
		r.rooms[roomID] = unknown
	}
}

// Untrack forgets roomID (its last local socket closed).
func (r *Reader) Untrack(roomID int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.rooms, roomID)
}

// LastSeq returns the last seq delivered for roomID, if it is tracked and
// a message of it has been seen.
func (r *Reader) LastSeq(roomID int64) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.rooms[roomID]
	return s, ok && s != unknown
}

// Ready reports whether the last read from Redis succeeded.
func (r *Reader) Ready() bool { return r.ready.Load() }

// Run reads until ctx ends, retrying Redis errors with capped backoff. It
// returns nil when ctx ends.
func (r *Reader) Run(ctx context.Context) error {
	keys := message.FanoutStreams(r.prefix)
	ids, err := r.startIDs(ctx, keys)
	if err != nil {
		return nil // ctx ended
	}
	failures := 0 // reads failed in a row
	args := make([]string, 2*len(keys))
	for ctx.Err() == nil {
		copy(args, keys)
		copy(args[len(keys):], ids)
		streams, err := r.rdb.XRead(ctx, &redis.XReadArgs{Streams: args, Count: r.opt.Count, Block: r.opt.Block}).Result()
		if errors.Is(err, redis.Nil) {
			r.ready.Store(true)
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.ready.Store(false)
			r.opt.Metrics.ReadErrors.Inc()
			failures++
			wait := retry.Backoff(100*time.Millisecond, 5*time.Second, failures)
			r.logger.Warn("fan-out read failed", "error", err, "retry_in", wait.String())
			if retry.Sleep(ctx, wait) != nil {
				return nil
			}
			continue
		}
		r.ready.Store(true)
		failures = 0
		now := time.Now()
		for _, s := range streams {
			i := indexOf(keys, s.Stream)
			for _, e := range s.Messages {
				r.opt.Metrics.ObserveEntryLag(e.ID, now)
				r.handle(ctx, e)
				if i >= 0 {
					ids[i] = e.ID
				}
			}
		}
	}
	return nil
}

// startIDs returns each stream's last entry id ("0-0" for an empty stream),
// retrying until Redis answers or ctx ends.
func (r *Reader) startIDs(ctx context.Context, keys []string) ([]string, error) {
	for try := 1; ; try++ {
		ids := make([]string, len(keys))
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.XMessageSliceCmd, len(keys))
		for i, k := range keys {
			cmds[i] = pipe.XRevRangeN(ctx, k, "+", "-", 1)
		}
		_, err := pipe.Exec(ctx)
		if err == nil {
			for i, c := range cmds {
				ids[i] = "0-0"
				if ms := c.Val(); len(ms) > 0 {
					ids[i] = ms[0].ID
				}
			}
			r.ready.Store(true)
			return ids, nil
		}
		r.ready.Store(false)
		wait := retry.Backoff(100*time.Millisecond, 5*time.Second, try)
		r.logger.Warn("fan-out start ids failed", "error", err, "retry_in", wait.String())
		if retry.Sleep(ctx, wait) != nil {
			return nil, ctx.Err()
		}
	}
}

func (r *Reader) handle(ctx context.Context, e redis.XMessage) {
	kind, _ := e.Values[message.FieldKind].(string)
	data, _ := e.Values[message.FieldData].(string)
	switch kind {
	case message.KindMessage:
		r.opt.Metrics.EntriesMessage.Inc()
		var m message.Message
		roomID, err := decode(data, &m, func() string { return m.RoomID })
		if err != nil || m.Seq <= 0 {
			r.logger.Warn("bad fan-out message entry", "entry_id", e.ID, "error", err)
			return
		}
		if tp, _ := e.Values[tracing.StreamField].(string); tp != "" {
			ctx = tracing.WithRemoteParent(ctx, tp)
		}
		r.message(ctx, roomID, m)
	case message.KindPresence:
		r.opt.Metrics.EntriesPresence.Inc()
		var p message.Presence
		roomID, err := decode(data, &p, func() string { return p.RoomID })
		if err != nil {
			r.logger.Warn("bad fan-out presence entry", "entry_id", e.ID, "error", err)
			return
		}
		r.sink.Presence(roomID, p)
	case message.KindTyping:
		r.opt.Metrics.EntriesTyping.Inc()
		var t message.Typing
		roomID, err := decode(data, &t, func() string { return t.RoomID })
		if err != nil {
			r.logger.Warn("bad fan-out typing entry", "entry_id", e.ID, "error", err)
			return
		}
		r.sink.Typing(roomID, t)
	default:
		r.logger.Warn("unknown fan-out entry kind", "entry_id", e.ID, "kind", kind)
	}
}

func decode(data string, v any, room func() string) (int64, error) {
	if err := json.Unmarshal([]byte(data), v); err != nil {
		return 0, fmt.Errorf("decode entry: %w", err)
	}
	id, err := strconv.ParseInt(room(), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("room id %q: %w", room(), err)
	}
	return id, nil
}

// message delivers m after any missing seqs of its room.
func (r *Reader) message(ctx context.Context, roomID int64, m message.Message) {
	r.mu.Lock()
	last, ok := r.rooms[roomID]
	r.mu.Unlock()
	if !ok {
		return
	}
	if m.Seq <= last {
		r.opt.Metrics.Duplicates.Inc()
		return
	}
	msgs := []message.Message{m}
	if last != unknown && m.Seq > last+1 {
		missing, err := r.backfill(ctx, roomID, last, m.Seq)
		if err == nil {
			r.opt.Metrics.GapRepaired.Inc()
		} else {
			r.opt.Metrics.GapFailed.Inc()
			// Deliver what we have: every connection repairs its own gap
			// (or is closed so its client resumes), so a database outage
			// must not stall every room of this gateway.
			r.logger.Error("fan-out gap repair failed", "room_id", roomID, "after_seq", last, "seq", m.Seq, "error", err)
		}
		msgs = append(missing, m)
	}
	r.mu.Lock()
	cur, ok := r.rooms[roomID]
	if ok {
		r.rooms[roomID] = max(cur, m.Seq)
	}
	r.mu.Unlock()
	if !ok {
		return
	}
	i := 0
	for i < len(msgs) && msgs[i].Seq <= cur {
		i++
	}
	if i < len(msgs) {
		// One rooms.deliver span per gateway and message, in the trace of
		// the message's send, when the entry carried its traceparent.
		var span trace.Span
		if trace.SpanContextFromContext(ctx).IsValid() {
			_, span = r.tracer.Start(ctx, "rooms.deliver", trace.WithSpanKind(trace.SpanKindConsumer))
			if span.IsRecording() {
				span.SetAttributes(attribute.Int64("rooms.room_id", roomID), attribute.Int64("rooms.seq", m.Seq),
					attribute.String("rooms.message_id", m.ID), attribute.Int("rooms.messages", len(msgs)-i))
			}
		}
		r.sink.Messages(roomID, msgs[i:])
		if span != nil {
			span.End()
		}
	}
}

// backfill reads seqs after..before-1 of roomID from the store, trying a few
// times.
func (r *Reader) backfill(ctx context.Context, roomID, after, before int64) ([]message.Message, error) {
	var out []message.Message
	var err error
	for try := 0; try < 3; try++ {
		// 50 ms, then 200 ms.
		if try > 0 && retry.Sleep(ctx, retry.Backoff(50*time.Millisecond, time.Second, 2*try-1)) != nil {
			break
		}
		for after+int64(len(out)) < before-1 {
			from := after + int64(len(out))
			limit := int(min(int64(r.opt.BackfillPage), before-1-from))
			var page []message.Message
			page, err = r.store.MessagesAfter(ctx, roomID, from, limit)
			if err != nil {
				break
			}
			n := len(out)
			for _, m := range page {
				if m.Seq == from+1 && m.Seq < before {
					out = append(out, m)
					from++
				}
			}
			if len(page) < limit || len(out) == n {
				break // not stored yet or never will be: deliver what we have
			}
		}
		if err == nil {
			return out, nil
		}
	}
	return out, fmt.Errorf("backfill room %d after seq %d: %w", roomID, after+int64(len(out)), err)
}

func indexOf(keys []string, k string) int {
	for i := range keys {
		if keys[i] == k {
			return i
		}
	}
	return -1
}
