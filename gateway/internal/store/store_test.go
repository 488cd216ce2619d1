package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"rooms/gateway/internal/store"
	"rooms/shared/message"
	"rooms/shared/testenv"
)

func TestUsers(t *testing.T) {
	db := testenv.Postgres(t)
	s := store.New(db.Pool)
	ctx := context.Background()
	u, err := s.CreateUser(ctx, "Sam", "hash")
	if err != nil || u.ID <= 0 {
		t.Fatalf("create: %+v %v", u, err)
	}
	for _, nick := range []string{"Sam", "sam", "SAM"} {
		if _, err := s.CreateUser(ctx, nick, "h"); !errors.Is(err, store.ErrNicknameTaken) {
			t.Fatalf("create %q: %v, want ErrNicknameTaken", nick, err)
		}
	}
	got, err := s.UserByNickname(ctx, "sAm")
	if err != nil || got.ID != u.ID || got.Nickname != "Sam" || got.PasswordHash != "hash" {
		t.Fatalf("by nickname: %+v %v", got, err)
	}
	if _, err := s.UserByNickname(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := s.UserByID(ctx, 999); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestRoomsAndMessages(t *testing.T) {
	db := testenv.Postgres(t)
	s := store.New(db.Pool)
	ctx := context.Background()
	if _, err := s.Room(ctx, 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("room before create: %v", err)
	}
	rooms, err := s.Rooms(ctx)
	if err != nil || len(rooms) != 0 {
		t.Fatalf("rooms: %v %v", rooms, err)
	}
	r1, err := s.CreateRoom(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := s.CreateRoom(ctx, "two")
	u, _ := s.CreateUser(ctx, "tom", "h")
	base := time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)
	for seq := 1; seq <= 10; seq++ {
		var cmid any
		if seq == 3 {
			cmid = "c-3"
		}
		if _, err := db.Pool.Exec(ctx, `INSERT INTO messages (room_id, seq, id, user_id, nickname, content, client_msg_id, time_created)
			VALUES ($1, $2, $3, $4, 'tom', $5, $6, $7)`, r1.ID, seq, uuid.Must(uuid.NewV7()), u.ID, fmt.Sprint("m", seq), cmid, base); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE rooms SET last_seq = 10 WHERE id = $1`, r1.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.Room(ctx, r1.ID)
	if err != nil || got.LastSeq != 10 || got.Name != "one" {
		t.Fatalf("room: %+v %v", got, err)
	}
	rooms, _ = s.Rooms(ctx)
	if len(rooms) != 2 || rooms[0].ID != r1.ID || rooms[1].ID != r2.ID {
		t.Fatalf("rooms order: %+v", rooms)
	}

	tests := []struct {
		name string
		get  func() ([]int64, error)
		want string
	}{
		{"after 0 limit 3", wrap(s.MessagesAfter(ctx, r1.ID, 0, 3)), "[1 2 3]"},
		{"after 8", wrap(s.MessagesAfter(ctx, r1.ID, 8, 50)), "[9 10]"},
		{"after 10", wrap(s.MessagesAfter(ctx, r1.ID, 10, 50)), "[]"},
		{"before 5 limit 2", wrap(s.MessagesBefore(ctx, r1.ID, 5, 2)), "[3 4]"},
		{"before 1", wrap(s.MessagesBefore(ctx, r1.ID, 1, 2)), "[]"},
		{"latest 4", wrap(s.LatestMessages(ctx, r1.ID, 4)), "[7 8 9 10]"},
		{"latest other room", wrap(s.LatestMessages(ctx, r2.ID, 4)), "[]"},
	}
	for _, tt := range tests {
		got, err := tt.get()
		if err != nil || fmt.Sprint(got) != tt.want {
			t.Errorf("%s = %v, %v; want %s", tt.name, got, err, tt.want)
		}
	}
	msgs, err := s.MessagesAfter(ctx, r1.ID, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.Seq != 3 || m.RoomID != fmt.Sprint(r1.ID) || m.UserID != fmt.Sprint(u.ID) || m.Content != "m3" ||
		m.ClientMsgID != "c-3" || m.TimeCreated != "2026-01-02T03:04:05.678901Z" || msgs[1].ClientMsgID != "" {
		t.Fatalf("message %+v / %+v", m, msgs[1])
	}
	if _, err := uuid.Parse(m.ID); err != nil {
		t.Fatalf("id %q: %v", m.ID, err)
	}
}

func wrap(msgs []message.Message, err error) func() ([]int64, error) {
	return func() ([]int64, error) {
		out := []int64{}
		for _, m := range msgs {
			out = append(out, m.Seq)
		}
		return out, err
	}
}
