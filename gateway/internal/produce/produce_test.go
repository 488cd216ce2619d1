package produce_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"rooms/gateway/internal/produce"
	"rooms/shared/message"
	"rooms/shared/testenv"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestSendDeliversKeyedRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := testenv.Kafka(t)
	brokers := c.ListenAddrs()[0]
	topic := "t-" + testenv.RandomID(4)
	if err := produce.EnsureTopic(ctx, brokers, topic, 4, 1); err != nil {
		t.Fatalf("EnsureTopic: %v", err)
	}
	if err := produce.EnsureTopic(ctx, brokers, topic, 4, 1); err != nil {
		t.Fatalf("EnsureTopic again: %v", err)
	}
	p, err := produce.New(produce.Config{Brokers: brokers, Topic: topic}, discard())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer p.Close(context.Background())
	if !p.Ready() {
		t.Fatal("not ready")
	}

	msgs := []message.Message{
		{ID: "0193a1b2-0000-7000-8000-000000000001", Seq: 9, RoomID: "7", UserID: "3", Nickname: "bob", Content: "hi", TimeCreated: "2026-11-26T14:00:00.123456Z", ClientMsgID: "c-1"},
		{ID: "0193a1b2-0000-7000-8000-000000000002", RoomID: "12", UserID: "4", Nickname: "amy", Content: "yo", TimeCreated: "2026-11-26T14:00:01.000000Z"},
	}
	for _, m := range msgs {
		if err := p.Produce(ctx, m); err != nil {
			t.Fatalf("Produce: %v", err)
		}
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatalf("kgo: %v", err)
	}
	defer cl.Close()
	got := map[string]*kgo.Record{}
	for len(got) < len(msgs) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("timed out with %d records", len(got))
		}
		fs.EachRecord(func(r *kgo.Record) { got[string(r.Key)] = r })
	}
	for _, m := range msgs {
		r, ok := got[m.RoomID]
		if !ok {
			t.Fatalf("no record with key %q", m.RoomID)
		}
		var back map[string]any
		if err := json.Unmarshal(r.Value, &back); err != nil {
			t.Fatalf("value: %v", err)
		}
		if _, has := back["seq"]; has {
			t.Errorf("record value carries seq: %s", r.Value)
		}
		want := m
		want.Seq = 0
		wantJSON, _ := json.Marshal(want)
		if string(r.Value) != string(wantJSON) {
			t.Errorf("value = %s, want %s", r.Value, wantJSON)
		}
	}
}

// An unreachable broker holds the first record in the queue; with a queue of
// one, the next is refused at once, and the first one's report fails after
// the message timeout.
func TestQueueFullAndFailedDelivery(t *testing.T) {
	p, err := produce.New(produce.Config{
		Brokers:        "127.0.0.1:1",
		Topic:          "nowhere",
		QueueMax:       1,
		MessageTimeout: time.Second,
	}, discard())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer p.Close(context.Background())
	m := message.Message{ID: "x", RoomID: "1", UserID: "1", Nickname: "abc", Content: "c", TimeCreated: "t"}
	res := make(chan error, 1)
	if err := p.Send(m, func(err error) { res <- err }); err != nil {
		t.Fatalf("first Send: %v", err)
	}
	if err := p.Send(m, func(error) { t.Error("callback of a refused record") }); !errors.Is(err, produce.ErrQueueFull) {
		t.Fatalf("second Send = %v, want ErrQueueFull", err)
	}
	select {
	case err := <-res:
		if !errors.Is(err, produce.ErrDelivery) {
			t.Fatalf("report = %v, want ErrDelivery", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no delivery report")
	}
}

func TestCloseRefusesSends(t *testing.T) {
	p, err := produce.New(produce.Config{Brokers: "127.0.0.1:1"}, discard())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if p.Ready() {
		t.Error("ready after Close")
	}
	err = p.Send(message.Message{RoomID: "1"}, func(error) {})
	if !errors.Is(err, produce.ErrUnavailable) {
		t.Fatalf("Send after Close = %v", err)
	}
}
