package fanout_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"rooms/gateway/internal/fanout"
	"rooms/gateway/internal/store"
	"rooms/shared/message"
	"rooms/shared/testenv"
)

type sink struct {
	mu     sync.Mutex
	seqs   map[int64][]int64
	events []string
}

func (s *sink) Messages(roomID int64, msgs []message.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		s.seqs[roomID] = append(s.seqs[roomID], m.Seq)
	}
}

func (s *sink) Presence(roomID int64, p message.Presence) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, "presence:"+p.Event)
}

func (s *sink) Typing(roomID int64, t message.Typing) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, "typing:"+t.Nickname)
}

func (s *sink) snapshot(room int64) ([]int64, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.seqs[room]...), append([]string(nil), s.events...)
}

// storeMessages inserts seqs 1..n in a new room as a worker would and
// returns the room id and the messages.
func storeMessages(t *testing.T, db *testenv.Database, n int) (int64, []message.Message) {
	t.Helper()
	ctx := context.Background()
	var userID, roomID int64
	if err := db.Pool.QueryRow(ctx, `INSERT INTO users (nickname, password_hash) VALUES ($1, 'x') RETURNING id`,
		"u"+testenv.RandomID(4)).Scan(&userID); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool.QueryRow(ctx, `INSERT INTO rooms (name) VALUES ('r') RETURNING id`).Scan(&roomID); err != nil {
		t.Fatal(err)
	}
	var msgs []message.Message
	for i := 1; i <= n; i++ {
		now := time.Now()
		m := message.Message{
			ID: uuid.Must(uuid.NewV7()).String(), Seq: int64(i), RoomID: strconv.FormatInt(roomID, 10),
			UserID: strconv.FormatInt(userID, 10), Nickname: "bob", Content: "m" + strconv.Itoa(i),
			TimeCreated: message.FormatTime(now),
		}
		if _, err := db.Pool.Exec(ctx, `INSERT INTO messages (room_id, seq, id, user_id, nickname, content, time_created)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, roomID, m.Seq, m.ID, userID, m.Nickname, m.Content, now); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE rooms SET last_seq = $2 WHERE id = $1`, roomID, n); err != nil {
		t.Fatal(err)
	}
	return roomID, msgs
}

func xadd(t *testing.T, rdb *redis.Client, prefix string, roomID int64, kind string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := rdb.XAdd(context.Background(), &redis.XAddArgs{
		Stream: message.FanoutStream(prefix, roomID),
		Values: []string{message.FieldKind, kind, message.FieldData, string(b)},
	}).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestReaderDedupesAndRepairsGaps(t *testing.T) {
	db := testenv.Postgres(t)
	rdb, prefix := testenv.Redis(t)
	roomID, msgs := storeMessages(t, db, 8)
	otherRoom := roomID + 1000

	// An entry already in the stream before the reader starts is not read.
	xadd(t, rdb, prefix, roomID, message.KindMessage, msgs[0])

	s := &sink{seqs: map[int64][]int64{}}
	r := fanout.New(rdb, prefix, store.New(db.Pool), s, slog.New(slog.NewTextHandler(io.Discard, nil)), fanout.Options{Block: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	testenv.Eventually(t, "reader ready", r.Ready)
	r.Track(roomID)

	// 2 (the baseline), 2 (duplicate), 5 (gap: 3 and 4 from PostgreSQL), 4 (old), 6,
	// then a jump to 8 (7 from PostgreSQL).
	for _, i := range []int{2, 2, 5, 4, 6, 8} {
		xadd(t, rdb, prefix, roomID, message.KindMessage, msgs[i-1])
	}
	xadd(t, rdb, prefix, otherRoom, message.KindMessage, message.Message{ID: "x", Seq: 1, RoomID: strconv.FormatInt(otherRoom, 10)})
	xadd(t, rdb, prefix, roomID, message.KindPresence, message.Presence{RoomID: strconv.FormatInt(roomID, 10), Event: "join"})
	xadd(t, rdb, prefix, roomID, message.KindTyping, message.Typing{RoomID: strconv.FormatInt(roomID, 10), Nickname: "bob"})

	testenv.Eventually(t, "typing event", func() bool { _, ev := s.snapshot(roomID); return len(ev) == 2 })
	seqs, ev := s.snapshot(roomID)
	want := []int64{2, 3, 4, 5, 6, 7, 8}
	if len(seqs) != len(want) {
		t.Fatalf("delivered %v, want %v", seqs, want)
	}
	for i := range want {
		if seqs[i] != want[i] {
			t.Fatalf("delivered %v, want %v", seqs, want)
		}
	}
	if ev[0] != "presence:join" || ev[1] != "typing:bob" {
		t.Errorf("events %v", ev)
	}
	if o, _ := s.snapshot(otherRoom); len(o) != 0 {
		t.Errorf("untracked room delivered %v", o)
	}
	if last, _ := r.LastSeq(roomID); last != 8 {
		t.Errorf("LastSeq = %d", last)
	}
}
