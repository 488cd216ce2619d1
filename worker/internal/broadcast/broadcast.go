// Package broadcast appends stored messages to the Redis fan-out streams
// that every gateway reads.
package broadcast

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"rooms/shared/message"
	"rooms/shared/retry"
	"rooms/shared/tracing"
)

// Options tune a Broadcaster. Zero values take the defaults.
type Options struct {
	// Prefix is the Redis key prefix (REDIS_PREFIX).
	Prefix string
	// MaxLen trims each stream to about this many entries
	// (default message.DefaultFanoutMaxLen).
	MaxLen int64
	// MinBackoff and MaxBackoff bound the pause between retries
	// (defaults 50ms and 5s).
	MinBackoff, MaxBackoff time.Duration
	// OnRetry, when set, is called after every failed try.
	OnRetry func(err error, try int)
}

// Broadcaster appends messages to the fan-out streams.
type Broadcaster struct {
	rdb  redis.Cmdable
	opts Options
}

// New returns a Broadcaster writing through rdb.
func New(rdb redis.Cmdable, opts Options) *Broadcaster {
	if opts.MaxLen <= 0 {
		opts.MaxLen = message.DefaultFanoutMaxLen
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 50 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	return &Broadcaster{rdb: rdb, opts: opts}
}

// Append adds one entry per message (kind message, data the message's JSON
// with its seq) to the room's fan-out stream, in the order given, in one
// pipeline. Callers pass each room's messages in seq order. It retries with
// capped backoff until it succeeds or ctx ends; a retry after a partial
// success appends some messages twice, which readers tolerate (they drop
// seqs they already delivered).
func (b *Broadcaster) Append(ctx context.Context, msgs []message.Message) error {
	return b.AppendTraced(ctx, msgs, nil)
}

// AppendTraced is Append, adding to each message's entry the traceparent
// traceparents holds for the message's id, if any, in the optional field
// tracing.StreamField.
func (b *Broadcaster) AppendTraced(ctx context.Context, msgs []message.Message, traceparents map[string]string) error {
	if len(msgs) == 0 {
		return nil
	}
	args := make([]*redis.XAddArgs, 0, len(msgs))
	for _, m := range msgs {
		room, err := strconv.ParseInt(m.RoomID, 10, 64)
		if err != nil {
			return fmt.Errorf("append message %s: invalid room_id %q", m.ID, m.RoomID)
		}
		data, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("append message %s: %w", m.ID, err)
		}
		args = append(args, &redis.XAddArgs{
			Stream: message.FanoutStream(b.opts.Prefix, room),
			MaxLen: b.opts.MaxLen,
			Approx: true,
			Values: values(string(data), traceparents[m.ID]),
		})
	}
	for try := 1; ; try++ {
		err := b.appendOnce(ctx, args)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("append %d messages: %w", len(msgs), ctx.Err())
		}
		if b.opts.OnRetry != nil {
			b.opts.OnRetry(err, try)
		}
		if err := retry.Sleep(ctx, retry.Backoff(b.opts.MinBackoff, b.opts.MaxBackoff, try)); err != nil {
			return fmt.Errorf("append %d messages: %w", len(msgs), err)
		}
	}
}

func values(data, traceparent string) []string {
	if traceparent == "" {
		return []string{message.FieldKind, message.KindMessage, message.FieldData, data}
	}
	return []string{message.FieldKind, message.KindMessage, message.FieldData, data, tracing.StreamField, traceparent}
}

func (b *Broadcaster) appendOnce(ctx context.Context, args []*redis.XAddArgs) error {
	_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, a := range args {
			p.XAdd(ctx, a)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("xadd pipeline: %w", err)
	}
	return nil
}
