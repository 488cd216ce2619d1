package broadcast_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rooms/shared/message"
	"rooms/shared/testenv"
	"rooms/shared/tracing"
	"rooms/worker/internal/broadcast"
)

func TestAppend(t *testing.T) {
	tests := []struct {
		name   string
		maxLen int64
		msgs   []message.Message
	}{
		{"one room", 0, msgs(7, 1, 5)},
		{"rooms sharing a stream", 0, append(msgs(3, 1, 4), msgs(3+message.FanoutShards, 1, 4)...)},
		{"trimmed", 10, msgs(5, 1, 300)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb, prefix := testenv.Redis(t)
			b := broadcast.New(rdb, broadcast.Options{Prefix: prefix, MaxLen: tt.maxLen})
			ctx := context.Background()
			if err := b.Append(ctx, tt.msgs); err != nil {
				t.Fatal(err)
			}
			entries, err := rdb.XRange(ctx, message.FanoutStream(prefix, mustRoom(tt.msgs[0])), "-", "+").Result()
			if err != nil {
				t.Fatal(err)
			}
			if tt.maxLen > 0 {
				// MAXLEN ~ trims whole nodes only: fewer than all, at least the limit.
				if int64(len(entries)) < tt.maxLen || len(entries) >= len(tt.msgs) {
					t.Fatalf("%d entries after trimming %d to ~%d", len(entries), len(tt.msgs), tt.maxLen)
				}
				tt.msgs = tt.msgs[len(tt.msgs)-len(entries):]
			}
			if len(entries) != len(tt.msgs) {
				t.Fatalf("%d entries, want %d", len(entries), len(tt.msgs))
			}
			for i, en := range entries {
				if en.Values[message.FieldKind] != message.KindMessage {
					t.Fatalf("kind %v", en.Values[message.FieldKind])
				}
				var got message.Message
				if err := json.Unmarshal([]byte(en.Values[message.FieldData].(string)), &got); err != nil {
					t.Fatal(err)
				}
				if got != tt.msgs[i] {
					t.Fatalf("entry %d: %+v, want %+v", i, got, tt.msgs[i])
				}
			}
		})
	}
}

func TestAppendRetriesUntilContextEnds(t *testing.T) {
	// Nothing listens on port 1: every try fails, and Append keeps
	// retrying until its context ends.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1})
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := broadcast.New(rdb, broadcast.Options{
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		OnRetry: func(_ error, try int) {
			if try == 3 {
				cancel()
			}
		},
	})
	err := b.Append(ctx, msgs(1, 1, 1))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context canceled", err)
	}
}

func msgs(room int64, from, to int64) []message.Message {
	var out []message.Message
	for seq := from; seq <= to; seq++ {
		out = append(out, message.Message{
			ID: fmt.Sprintf("0193c000-0000-7000-8000-%012x", room*100000+seq), Seq: seq,
			RoomID: fmt.Sprint(room), UserID: "1", Nickname: "ann", Content: fmt.Sprint("m", seq),
			TimeCreated: message.FormatTime(time.Unix(seq, 0)),
		})
	}
	return out
}

func mustRoom(m message.Message) int64 {
	var n int64
	fmt.Sscan(m.RoomID, &n)
	return n
}

func TestAppendTracedAddsTraceparentField(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	b := broadcast.New(rdb, broadcast.Options{Prefix: prefix})
	ctx := context.Background()
	ms := msgs(11, 1, 2)
	tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if err := b.AppendTraced(ctx, ms, map[string]string{ms[0].ID: tp}); err != nil {
		t.Fatal(err)
	}
	entries, err := rdb.XRange(ctx, message.FanoutStream(prefix, 11), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("%d entries, want 2", len(entries))
	}
	if got := entries[0].Values[tracing.StreamField]; got != tp {
		t.Fatalf("first entry %s = %v, want %s", tracing.StreamField, got, tp)
	}
	if _, ok := entries[1].Values[tracing.StreamField]; ok || len(entries[1].Values) != 2 {
		t.Fatalf("untraced entry has fields %v, want only kind and data", entries[1].Values)
	}
}
