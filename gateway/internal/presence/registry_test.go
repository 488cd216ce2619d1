package presence_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"rooms/gateway/internal/presence"
	"rooms/shared/message"
	"rooms/shared/testenv"
)

func TestJoinLeaveAcrossGateways(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	gw1 := presence.NewRegistry(rdb, prefix, "gw1", logger)
	gw2 := presence.NewRegistry(rdb, prefix, "gw2", logger)
	const room = 5
	bobA := presence.Conn{RoomID: room, ConnID: "a", UserID: "3", Nickname: "bob"}
	bobB := presence.Conn{RoomID: room, ConnID: "b", UserID: "3", Nickname: "bob"}
	amy := presence.Conn{RoomID: room, ConnID: "c", UserID: "4", Nickname: "amy"}

	steps := []struct {
		name string
		do   func() (bool, error)
		want bool
	}{
		{"bob first on gw1", func() (bool, error) { return gw1.Join(ctx, bobA) }, true},
		{"bob second on gw2", func() (bool, error) { return gw2.Join(ctx, bobB) }, false},
		{"amy first on gw2", func() (bool, error) { return gw2.Join(ctx, amy) }, true},
		{"bob leaves gw1, still on gw2", func() (bool, error) { return gw1.Leave(ctx, bobA) }, false},
		{"bob leaves gw2, last", func() (bool, error) { return gw2.Leave(ctx, bobB) }, true},
		{"bob back on gw1", func() (bool, error) { return gw1.Join(ctx, bobA) }, true},
	}
	for _, s := range steps {
		got, err := s.do()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got != s.want {
			t.Errorf("%s: got %v, want %v", s.name, got, s.want)
		}
	}

	clients, err := presence.List(ctx, rdb, prefix, room, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(clients) != 2 || clients[0].UserID != "3" || clients[1].UserID != "4" {
		t.Errorf("List = %+v", clients)
	}

	entries, err := rdb.XRange(ctx, message.FanoutStream(prefix, room), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		if e.Values[message.FieldKind] != message.KindPresence {
			t.Fatalf("entry kind %v", e.Values[message.FieldKind])
		}
		var p message.Presence
		if err := json.Unmarshal([]byte(e.Values[message.FieldData].(string)), &p); err != nil {
			t.Fatal(err)
		}
		if p.RoomID != "5" || p.TimeCreated == "" {
			t.Errorf("payload %+v", p)
		}
		got = append(got, p.Event+":"+p.Nickname)
	}
	want := []string{"join:bob", "join:amy", "leave:bob", "join:bob"}
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v, want %v", got, want)
		}
	}
}

func TestRefreshAndTyping(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	r := presence.NewRegistry(rdb, prefix, "gw1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	c := presence.Conn{RoomID: 17, ConnID: "a", UserID: "3", Nickname: "bob"}
	if _, err := r.Join(ctx, c); err != nil {
		t.Fatal(err)
	}
	// A Redis restart loses the entry; the refresher puts it back.
	rdb.Del(ctx, presence.Key(prefix, 17))
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	score, err := rdb.ZScore(ctx, presence.Key(prefix, 17), presence.Member("gw1", "a", "3", "bob")).Result()
	if err != nil || int64(score) < time.Now().UnixMilli() {
		t.Fatalf("score %v, %v", score, err)
	}
	if err := r.Typing(ctx, c); err != nil {
		t.Fatal(err)
	}
	entries, _ := rdb.XRange(ctx, message.FanoutStream(prefix, 17), "-", "+").Result()
	last := entries[len(entries)-1]
	if last.Values[message.FieldKind] != message.KindTyping {
		t.Fatalf("last entry %v", last.Values)
	}
	if _, err := r.Leave(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rdb.ZCard(ctx, presence.Key(prefix, 17)).Val(); n != 0 {
		t.Fatalf("%d entries after leave and refresh", n)
	}
}
