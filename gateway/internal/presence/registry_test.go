package presence_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rooms/gateway/internal/presence"
	"rooms/shared/message"
	"rooms/shared/testenv"
)

// quiet is the registries' logger in these tests.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestJoinLeaveAcrossGateways(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	gw1 := presence.NewRegistry(rdb, prefix, "gw1", quiet)
	gw2 := presence.NewRegistry(rdb, prefix, "gw2", quiet)
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

// The refresher puts back what Redis lost, the user's own set too (a second
// connection of the user is then not announced again); typing goes to the
// room's stream; leaves take the entries out for good.
func TestRefreshAndTyping(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	r := presence.NewRegistry(rdb, prefix, "gw1", quiet)
	c := presence.Conn{RoomID: 17, ConnID: "a", UserID: "3", Nickname: "bob"}
	c2 := presence.Conn{RoomID: 17, ConnID: "b", UserID: "3", Nickname: "bob"}
	if _, err := r.Join(ctx, c); err != nil {
		t.Fatal(err)
	}
	// A Redis restart loses the entries; the refresher puts them back.
	rdb.Del(ctx, presence.Key(prefix, 17), presence.UserKey(prefix, 17, "3"))
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	score, err := rdb.ZScore(ctx, presence.Key(prefix, 17), presence.Member("gw1", "a", "3", "bob")).Result()
	if err != nil || int64(score) < time.Now().UnixMilli() {
		t.Fatalf("score %v, %v", score, err)
	}
	if ttl := rdb.PTTL(ctx, presence.UserKey(prefix, 17, "3")).Val(); ttl <= 0 {
		t.Fatalf("user set TTL after refresh = %v", ttl)
	}
	if first, err := r.Join(ctx, c2); err != nil || first {
		t.Fatalf("second connection after a refresh = %v, %v, want not first", first, err)
	}
	if err := r.Typing(ctx, c); err != nil {
		t.Fatal(err)
	}
	entries, _ := rdb.XRange(ctx, message.FanoutStream(prefix, 17), "-", "+").Result()
	last := entries[len(entries)-1]
	if last.Values[message.FieldKind] != message.KindTyping {
		t.Fatalf("last entry %v", last.Values)
	}
	if last, err := r.Leave(ctx, c); err != nil || last {
		t.Fatalf("leave of one of two = %v, %v, want not last", last, err)
	}
	if last, err := r.Leave(ctx, c2); err != nil || !last {
		t.Fatalf("leave of the last = %v, %v, want last", last, err)
	}
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rdb.ZCard(ctx, presence.Key(prefix, 17)).Val(); n != 0 {
		t.Fatalf("%d entries after leave and refresh", n)
	}
}

// First and last are decided by the user's live connections only: a stale
// entry (of a gateway that died) neither hides a join nor holds back a
// leave, and other users in the room do not count.
func TestStaleConnectionsDoNotCount(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	dead := presence.NewRegistry(rdb, prefix, "gw-dead", quiet)
	gw := presence.NewRegistry(rdb, prefix, "gw1", quiet)
	const room = 9
	old := presence.Conn{RoomID: room, ConnID: "old", UserID: "3", Nickname: "bob"}
	bob := presence.Conn{RoomID: room, ConnID: "new", UserID: "3", Nickname: "bob"}
	amy := presence.Conn{RoomID: room, ConnID: "c", UserID: "4", Nickname: "amy"}

	if first, err := dead.Join(ctx, old); err != nil || !first {
		t.Fatalf("first join = %v, %v", first, err)
	}
	// The dead gateway stops refreshing: its entry goes stale.
	staleAt := float64(time.Now().Add(-time.Second).UnixMilli())
	m := presence.Member("gw-dead", "old", "3", "bob")
	for _, k := range []string{presence.Key(prefix, room), presence.UserKey(prefix, room, "3")} {
		if err := rdb.ZAdd(ctx, k, redis.Z{Score: staleAt, Member: m}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if first, err := gw.Join(ctx, amy); err != nil || !first {
		t.Fatalf("amy's join = %v, %v", first, err)
	}
	if first, err := gw.Join(ctx, bob); err != nil || !first {
		t.Fatalf("bob's join beside a stale entry = %v, %v, want first", first, err)
	}
	// Put a stale entry back and leave: bob's only live connection is gone.
	if err := rdb.ZAdd(ctx, presence.UserKey(prefix, room, "3"), redis.Z{Score: staleAt, Member: m}).Err(); err != nil {
		t.Fatal(err)
	}
	if last, err := gw.Leave(ctx, bob); err != nil || !last {
		t.Fatalf("bob's leave beside a stale entry = %v, %v, want last", last, err)
	}
	clients, err := presence.List(ctx, rdb, prefix, room, time.Now())
	if err != nil || len(clients) != 1 || clients[0].UserID != "4" {
		t.Fatalf("List = %+v, %v", clients, err)
	}
}
