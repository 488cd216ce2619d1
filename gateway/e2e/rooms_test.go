package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

var timeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)

type roomJSON struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	TimeCreated string `json:"time_created"`
	LastSeq     *int64 `json:"last_seq"`
}

func TestRooms(t *testing.T) {
	g := start(t)
	tok := g.user("liam").AccessToken

	if r := g.do("GET", "/api/chat/rooms", tok, nil); r.Status != http.StatusOK || string(r.Body) != "[]" {
		t.Fatalf("empty list: %d %s", r.Status, r.Body)
	}
	r := g.do("POST", "/api/chat/rooms", tok, map[string]string{"name": "  General chat \t"})
	m := wantKeys(t, r.Body, "id", "name", "time_created")
	if r.Status != http.StatusOK || m["id"] != "1" || m["name"] != "General chat" || !timeRE.MatchString(m["time_created"].(string)) {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	r = g.do("POST", "/api/chat/rooms", tok, map[string]string{"name": "Ünïcode ✓ " + strings.Repeat("x", 40)})
	if r.Status != http.StatusOK {
		t.Fatalf("create second: %d %s", r.Status, r.Body)
	}

	for name, body := range map[string]string{
		"empty":        `{"name":""}`,
		"missing":      `{}`,
		"whitespace":   `{"name":"   "}`,
		"too long":     `{"name":"` + strings.Repeat("é", 51) + `"}`,
		"control":      `{"name":"a\u0007b"}`,
		"newline":      `{"name":"a\nb"}`,
		"wrong type":   `{"name":12}`,
		"null object":  `null`,
		"array of obj": `[{"name":"x"}]`,
	} {
		t.Run(name, func(t *testing.T) {
			r := g.do("POST", "/api/chat/rooms", tok, body)
			wantError(t, r, http.StatusBadRequest, "validation_failed")
		})
	}
	wantError(t, g.do("POST", "/api/chat/rooms", tok, `{"name":"x"`), http.StatusBadRequest, "invalid_json")
	wantError(t, g.do("POST", "/api/chat/rooms", tok, "{\"name\":\"a\xffb\"}"), http.StatusBadRequest, "invalid_json")

	var list []roomJSON
	wantJSON(t, g.do("GET", "/api/chat/rooms", tok, nil), &list)
	if len(list) != 2 || list[0].ID != "1" || list[1].ID != "2" || list[0].LastSeq != nil {
		t.Fatalf("list %+v", list)
	}

	r = g.do("GET", "/api/chat/rooms/1", tok, nil)
	m = wantKeys(t, r.Body, "id", "name", "time_created", "last_seq")
	if m["last_seq"] != float64(0) || m["name"] != "General chat" {
		t.Fatalf("get: %s", r.Body)
	}
	for _, id := range []string{"abc", "0", "-1", "3", "99999999999999999999", "9223372036854775807", "1.5", "%20"} {
		for _, suffix := range []string{"", "/clients", "/messages"} {
			wantError(t, g.do("GET", "/api/chat/rooms/"+id+suffix, tok, nil), http.StatusNotFound, "not_found")
		}
	}
	wantError(t, g.do("GET", "/api/chat/rooms/1", "", nil), http.StatusUnauthorized, "unauthorized")
}

func TestRoomClients(t *testing.T) {
	g := start(t)
	tok := g.user("mia").AccessToken
	g.do("POST", "/api/chat/rooms", tok, map[string]string{"name": "r"})
	if r := g.do("GET", "/api/chat/rooms/1/clients", tok, nil); r.Status != http.StatusOK || string(r.Body) != "[]" {
		t.Fatalf("clients: %d %s", r.Status, r.Body)
	}
	live := float64(time.Now().Add(time.Hour).UnixMilli())
	stale := float64(time.Now().Add(-time.Hour).UnixMilli())
	ctx := context.Background()
	key := g.prefix + "presence:1"
	if err := g.rdb.ZAdd(ctx, key,
		redisZ(live, "gw1|c1|7|zed"), redisZ(live, "gw2|c2|7|zed"), redisZ(live, "gw1|c3|3|amy"), redisZ(stale, "gw3|c4|9|old"),
	).Err(); err != nil {
		t.Fatal(err)
	}
	r := g.do("GET", "/api/chat/rooms/1/clients", tok, nil)
	if r.Status != http.StatusOK || string(r.Body) != `[{"user_id":"3","nickname":"amy"},{"user_id":"7","nickname":"zed"}]` {
		t.Fatalf("clients: %d %s", r.Status, r.Body)
	}
}

func TestRoomMessages(t *testing.T) {
	g := start(t)
	s := g.user("noah")
	tok := s.AccessToken
	g.do("POST", "/api/chat/rooms", tok, map[string]string{"name": "history"})
	g.do("POST", "/api/chat/rooms", tok, map[string]string{"name": "empty"})

	// Store 120 messages directly, as a worker would.
	ctx := context.Background()
	base := time.Date(2026, 11, 26, 14, 0, 0, 123456000, time.UTC)
	const total = 120
	for seq := 1; seq <= total; seq++ {
		var cmid any
		if seq%2 == 0 {
			cmid = fmt.Sprintf("c-%d", seq)
		}
		if _, err := g.db.Pool.Exec(ctx,
			`INSERT INTO messages (room_id, seq, id, user_id, nickname, content, client_msg_id, time_created)
			 VALUES (1, $1, $2, $3, 'noah', $4, $5, $6)`,
			seq, uuid.Must(uuid.NewV7()), s.UserID, "m"+strconv.Itoa(seq), cmid, base.Add(time.Duration(seq)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.db.Pool.Exec(ctx, `UPDATE rooms SET last_seq = $1 WHERE id = 1`, total); err != nil {
		t.Fatal(err)
	}
	var room roomJSON
	wantJSON(t, g.do("GET", "/api/chat/rooms/1", tok, nil), &room)
	if room.LastSeq == nil || *room.LastSeq != total {
		t.Fatalf("last_seq = %v", room.LastSeq)
	}

	seqs := func(query string) []int64 {
		t.Helper()
		r := g.do("GET", "/api/chat/rooms/1/messages"+query, tok, nil)
		var msgs []map[string]any
		wantJSON(t, r, &msgs)
		out := make([]int64, len(msgs))
		for i, m := range msgs {
			out[i] = int64(m["seq"].(float64))
		}
		return out
	}
	span := func(from, to int64) []int64 {
		var out []int64
		for s := from; s <= to; s++ {
			out = append(out, s)
		}
		return out
	}
	for _, tt := range []struct {
		query string
		want  []int64
	}{
		{"", span(71, 120)},
		{"?limit=3", span(118, 120)},
		{"?limit=200", span(1, 120)},
		{"?after_seq=0", span(1, 50)},
		{"?after_seq=10&limit=5", span(11, 15)},
		{"?after_seq=118", span(119, 120)},
		{"?after_seq=120", nil},
		{"?after_seq=9223372036854775807", nil},
		{"?before_seq=20&limit=3", span(17, 19)},
		{"?before_seq=1", nil},
		{"?before_seq=0", nil},
		{"?before_seq=1000", span(71, 120)},
		{"?before_seq=30", span(1, 29)},
		{"?limit=1&before_seq=2", []int64{1}},
	} {
		got := seqs(tt.query)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
			t.Errorf("messages%s = %v, want %v", tt.query, got, tt.want)
		}
	}

	// Message shape.
	r := g.do("GET", "/api/chat/rooms/1/messages?after_seq=0&limit=2", tok, nil)
	var msgs []json.RawMessage
	wantJSON(t, r, &msgs)
	m1 := wantKeys(t, msgs[0], "id", "seq", "room_id", "user_id", "nickname", "content", "time_created")
	m2 := wantKeys(t, msgs[1], "id", "seq", "room_id", "user_id", "nickname", "content", "time_created", "client_msg_id")
	if m1["room_id"] != "1" || m1["user_id"] != s.UserID || m1["content"] != "m1" || m1["time_created"] != "2026-11-26T14:00:01.123456Z" || m2["client_msg_id"] != "c-2" {
		t.Fatalf("messages %s", r.Body)
	}
	if _, err := uuid.Parse(m1["id"].(string)); err != nil {
		t.Fatalf("id %v: %v", m1["id"], err)
	}
	if r := g.do("GET", "/api/chat/rooms/2/messages", tok, nil); r.Status != http.StatusOK || string(r.Body) != "[]" {
		t.Fatalf("empty room: %d %s", r.Status, r.Body)
	}

	for _, q := range []string{
		"?after_seq=1&before_seq=5", "?after_seq=-1", "?before_seq=-1", "?after_seq=abc", "?after_seq=1.5",
		"?after_seq=", "?after_seq=99999999999999999999", "?limit=0", "?limit=201", "?limit=-5", "?limit=x", "?limit=",
		"?after_seq=+1",
	} {
		wantError(t, g.do("GET", "/api/chat/rooms/1/messages"+q, tok, nil), http.StatusBadRequest, "validation_failed")
	}
	wantError(t, g.do("GET", "/api/chat/rooms/3/messages", tok, nil), http.StatusNotFound, "not_found")
	wantError(t, g.do("GET", "/api/chat/rooms/1/messages", "", nil), http.StatusUnauthorized, "unauthorized")
}
