package ws_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"rooms/gateway/internal/auth"
	"rooms/gateway/internal/produce"
	"rooms/gateway/internal/ws"
	"rooms/shared/message"
	"rooms/shared/testenv"
)

func TestHandshakeRefusals(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.user("alice")
	room := strconv.FormatInt(e.room, 10)
	tests := []struct {
		name   string
		room   string
		query  string
		header http.Header
		status int
		code   string
	}{
		{"no token", room, "", nil, 401, "unauthorized"},
		{"bad header token", room, "", http.Header{"Authorization": {"Bearer nope"}}, 401, "unauthorized"},
		{"bad query token", room, "access_token=Bearer%20nope", nil, 401, "unauthorized"},
		{"bad ticket", room, "ticket=nope", nil, 401, "unauthorized"},
		{"unknown room", "999999", "access_token=" + tok, nil, 404, "not_found"},
		{"non-numeric room", "abc", "access_token=" + tok, nil, 404, "not_found"},
		{"foreign origin", room, "access_token=" + tok, http.Header{"Origin": {"http://evil.example"}}, 403, "forbidden_origin"},
		{"bad since_seq", room, "since_seq=-1&access_token=" + tok, nil, 400, "validation_failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := "ws://" + e.addr + "/api/chat/rooms/" + tt.room
			if tt.query != "" {
				u += "?" + tt.query
			}
			_, resp, err := fws.DefaultDialer.Dial(u, tt.header)
			if err == nil {
				t.Fatal("handshake accepted")
			}
			if resp == nil {
				t.Fatalf("no response: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			var got struct{ Code, Message string }
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if resp.StatusCode != tt.status || got.Code != tt.code || got.Message == "" {
				t.Errorf("got %d %s, want %d %s", resp.StatusCode, body, tt.status, tt.code)
			}
		})
	}
}

func TestAcceptedCredentials(t *testing.T) {
	e := newEnv(t, nil)
	id, tok := e.user("alice")
	ticket, err := e.auth.IssueTicket(context.Background(), auth.Claims{UserID: id, Nickname: "alice", ExpiresAt: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"access_token=Bearer%20" + tok, "access_token=" + tok, "ticket=" + ticket} {
		c, _, err := e.tryDial("", true, q, http.Header{"Origin": {"http://allowed.example"}})
		if err != nil {
			t.Fatalf("%s: %v", q[:12], err)
		}
		if w := c.next("welcome"); w["user_id"] != strconv.FormatInt(id, 10) {
			t.Errorf("welcome %v", w)
		}
	}
	// A ticket is valid once.
	if _, resp, err := e.tryDial("", true, "ticket="+ticket, nil); err == nil || resp.StatusCode != 401 {
		t.Fatalf("second use of a ticket: %v", err)
	}
}

func TestV2SendAckTypingPing(t *testing.T) {
	e := newEnv(t, nil)
	aliceID, aliceTok := e.user("alice")
	bobID, bobTok := e.user("bob")
	alice := e.dial(aliceTok, true, "")
	w := alice.frame()
	want := map[string]any{"type": "welcome", "room_id": strconv.FormatInt(e.room, 10),
		"user_id": strconv.FormatInt(aliceID, 10), "nickname": "alice", "last_seq": 0.0, "recovered": true}
	for k, v := range want {
		if w[k] != v {
			t.Fatalf("welcome %v, want %v", w, want)
		}
	}
	bob := e.dial(bobTok, true, "")
	bob.next("welcome")
	// Alice sees her own join, then Bob's.
	if p := alice.next("presence"); p["event"] != "join" || p["nickname"] != "alice" {
		t.Fatalf("presence %v", p)
	}
	if p := alice.next("presence"); p["event"] != "join" || p["user_id"] != strconv.FormatInt(bobID, 10) || p["nickname"] != "bob" {
		t.Fatalf("presence %v", p)
	}

	alice.send(map[string]any{"type": "send", "content": "hi", "client_msg_id": "c-1"})
	gotAck, gotMsg := false, false
	for !gotAck || !gotMsg {
		f := alice.frame()
		switch f["type"] {
		case "ack":
			if f["client_msg_id"] != "c-1" {
				t.Fatalf("ack %v", f)
			}
			gotAck = true
		case "message":
			if f["seq"] != 1.0 || f["content"] != "hi" || f["client_msg_id"] != "c-1" || f["nickname"] != "alice" {
				t.Fatalf("message %v", f)
			}
			gotMsg = true
		case "presence":
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	if m := bob.next("message"); m["seq"] != 1.0 || m["user_id"] != strconv.FormatInt(aliceID, 10) {
		t.Fatalf("bob got %v", m)
	}

	// The same client_msg_id again: acked again, stored once.
	alice.send(map[string]any{"type": "send", "content": "hi", "client_msg_id": "c-1"})
	if a := alice.next("ack"); a["client_msg_id"] != "c-1" {
		t.Fatalf("ack %v", a)
	}

	// Typing reaches the others, not the typist.
	bob.send(map[string]any{"type": "typing"})
	if ty := alice.next("typing"); ty["user_id"] != strconv.FormatInt(bobID, 10) || ty["nickname"] != "bob" {
		t.Fatalf("typing %v", ty)
	}
	bob.send(map[string]any{"type": "ping"})
	bob.next("pong")

	tests := []struct {
		name  string
		frame string
		code  string
		cmid  any
	}{
		{"not json", "{", "invalid_message", nil},
		{"unknown type", `{"type":"dance"}`, "invalid_message", nil},
		{"no client_msg_id", `{"type":"send","content":"x"}`, "invalid_message", nil},
		{"long client_msg_id", `{"type":"send","content":"x","client_msg_id":"` + strings.Repeat("a", 65) + `"}`, "invalid_message", nil},
		{"blank content", `{"type":"send","content":"  ","client_msg_id":"c-2"}`, "invalid_message", "c-2"},
		{"long content", `{"type":"send","content":"` + strings.Repeat("é", 2001) + `","client_msg_id":"c-3"}`, "content_too_long", "c-3"},
	}
	for _, tt := range tests {
		alice.sendRaw(tt.frame)
		f := alice.next("error")
		if f["code"] != tt.code || f["client_msg_id"] != tt.cmid || f["message"] == "" {
			t.Errorf("%s: got %v, want code %s client_msg_id %v", tt.name, f, tt.code, tt.cmid)
		}
	}

	// Next message is seq 2: the retry above did not store a second one.
	alice.send(map[string]any{"type": "send", "content": "again", "client_msg_id": "c-4"})
	if m := bob.next("message"); m["seq"] != 2.0 || m["content"] != "again" {
		t.Fatalf("bob got %v", m)
	}

	// Bob's last connection closing is announced.
	bob.c.Close()
	for {
		f := alice.frame()
		if f["type"] == "presence" && f["event"] == "leave" {
			break
		}
	}
}

func TestTypingNotEchoedToTypist(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.user("alice")
	alice := e.dial(tok, true, "")
	alice.next("welcome")
	alice.send(map[string]any{"type": "typing"})
	alice.send(map[string]any{"type": "ping"})
	// Typing goes through Redis, ping is answered locally: wait a little
	// longer by sending a message through the whole pipeline.
	alice.send(map[string]any{"type": "send", "content": "x", "client_msg_id": "c"})
	for seen := 0; seen < 3; {
		f := alice.frame()
		switch f["type"] {
		case "typing":
			t.Fatal("typing echoed to the typist")
		case "pong", "ack", "message":
			seen++
		}
	}
}

func TestLegacyFraming(t *testing.T) {
	e := newEnv(t, nil)
	aliceID, aliceTok := e.user("alice")
	_, bobTok := e.user("bob")
	stored := e.storeDirect(aliceID, 3)

	alice := e.dial(aliceTok, false, "")
	if p := alice.c.Subprotocol(); p != "" {
		t.Fatalf("subprotocol %q", p)
	}
	first := alice.read()
	want, _ := json.Marshal([]message.Message{stored[2], stored[1], stored[0]})
	if string(first) != string(want) {
		t.Fatalf("first frame\n got %s\nwant %s", first, want)
	}

	bob := e.dial(bobTok, false, "")
	if b := bob.read(); string(b) != string(mustMarshal(stored[2], stored[1], stored[0])) {
		t.Fatalf("bob first frame %s", b)
	}
	// Alice sees her own join, then Bob's.
	if own := alice.frame(); own["content"] != "joined the room" || own["nickname"] != "alice" {
		t.Fatalf("own join %v", own)
	}
	joined := alice.frame()
	if joined["content"] != "joined the room" || joined["nickname"] != "bob" || joined["seq"] != nil || joined["id"] == "" || joined["time_created"] == "" {
		t.Fatalf("join %v", joined)
	}
	if _, has := joined["type"]; has {
		t.Fatalf("join carries type: %v", joined)
	}

	alice.sendRaw("hello legacy")
	b := alice.read()
	var got message.Message
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Seq != 4 || got.Content != "hello legacy" || got.Nickname != "alice" {
		t.Fatalf("message %s", b)
	}
	if string(b) != string(mustMarshal1(got)) {
		t.Fatalf("message framing %s", b)
	}

	alice.sendRaw("   ")
	f := alice.frame()
	if f["type"] != "error" || f["code"] != "invalid_message" || f["message"] == "" {
		t.Fatalf("error frame %v", f)
	}
	alice.sendRaw("still open")
	if m := alice.frame(); m["seq"] != 5.0 {
		t.Fatalf("after error %v", m)
	}

	bob.c.Close()
	for {
		f := alice.frame()
		if f["content"] == "left the room" {
			break
		}
	}
}

func mustMarshal(msgs ...message.Message) []byte {
	b, _ := json.Marshal(msgs)
	return b
}

func mustMarshal1(m message.Message) []byte {
	b, _ := json.Marshal(m)
	return b
}

func TestLegacyEmptyHistory(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.user("alice")
	c := e.dial(tok, false, "")
	if b := c.read(); string(b) != "[]" {
		t.Fatalf("first frame %s", b)
	}
}

func TestResumeReplaysThenLive(t *testing.T) {
	e := newEnv(t, nil)
	aliceID, tok := e.user("alice")
	stored := e.storeDirect(aliceID, 5)
	c := e.dial(tok, true, "since_seq=2")
	w := c.next("welcome")
	if w["last_seq"] != 5.0 || w["recovered"] != true {
		t.Fatalf("welcome %v", w)
	}
	// Duplicates of stored messages in the stream must not reach the client.
	for _, m := range stored[1:] {
		if err := e.fanOut(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	c.send(map[string]any{"type": "send", "content": "live", "client_msg_id": "l-1"})
	var seqs []float64
	for len(seqs) < 4 {
		f := c.frame()
		if f["type"] == "message" {
			seqs = append(seqs, f["seq"].(float64))
		}
	}
	for i, s := range seqs {
		if s != float64(3+i) {
			t.Fatalf("seqs %v, want 3..6", seqs)
		}
	}
	// Nothing else arrives: a ping is answered next (after the ack).
	c.send(map[string]any{"type": "ping"})
	for {
		f := c.frame()
		if f["type"] == "pong" {
			break
		}
		if f["type"] == "message" {
			t.Fatalf("extra message %v", f)
		}
	}
}

func TestResumeBeyondLimitIsNotRecovered(t *testing.T) {
	e := newEnv(t, nil)
	aliceID, tok := e.user("alice")
	_, err := e.db.Pool.Exec(context.Background(), `
		INSERT INTO messages (room_id, seq, id, user_id, nickname, content, time_created)
		SELECT $1, g, gen_random_uuid(), $2, 'alice', 'm' || g, now() FROM generate_series(1, 1002) g`, e.room, aliceID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Pool.Exec(context.Background(), `UPDATE rooms SET last_seq = 1002 WHERE id = $1`, e.room); err != nil {
		t.Fatal(err)
	}
	c := e.dial(tok, true, "since_seq=1")
	if w := c.next("welcome"); w["last_seq"] != 1002.0 || w["recovered"] != false {
		t.Fatalf("welcome %v", w)
	}
	c.send(map[string]any{"type": "send", "content": "live", "client_msg_id": "l-1"})
	if m := c.next("message"); m["seq"] != 1003.0 {
		t.Fatalf("first message %v", m)
	}

	// Exactly at the limit it replays.
	c2 := e.dial(tok, true, "since_seq=3")
	if w := c2.next("welcome"); w["recovered"] != true {
		t.Fatalf("welcome %v", w)
	}
	for want := 4.0; want <= 1003; want++ {
		if m := c2.next("message"); m["seq"] != want {
			t.Fatalf("replay got %v, want seq %v", m["seq"], want)
		}
	}
}

func TestOversizedFrameCloses1009(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.user("alice")
	c := e.dial(tok, true, "")
	c.next("welcome")
	c.sendRaw(strings.Repeat("x", 17<<10))
	if code := c.closeCode(); code != 1009 {
		t.Fatalf("close code %d", code)
	}
}

func TestDrainCloses1001(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.user("alice")
	a := e.dial(tok, true, "")
	a.next("welcome")
	b := e.dial(tok, false, "")
	b.read()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- e.srv.Drain(ctx) }()
	if code := a.closeCode(); code != 1001 {
		t.Fatalf("v2 close code %d", code)
	}
	if code := b.closeCode(); code != 1001 {
		t.Fatalf("legacy close code %d", code)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if e.srv.Ready() {
		t.Error("ready while draining")
	}
	if _, resp, err := e.tryDial(tok, true, "", nil); err == nil || resp.StatusCode != 503 {
		t.Fatalf("dial while draining: %v", err)
	}
}

// slowAcks hands each delivery report to the connection late, as a busy
// broker would.
type slowAcks struct {
	ws.Producer
	delay time.Duration
}

func (p slowAcks) Send(m message.Message, done produce.Callback) error {
	return p.Producer.Send(m, func(err error) { time.AfterFunc(p.delay, func() { done(err) }) })
}

// TestDrainAcksAcceptedSendsBefore1001: sends accepted before a drain get
// their acks before the 1001 close, and a send read during the drain is
// refused (never stored). Drain may wait for the acks far longer than the
// test lasts, so it finishes in time only if the last delivery report
// wakes it.
func TestDrainAcksAcceptedSendsBefore1001(t *testing.T) {
	e := newEnvWith(t, func(c *ws.Config) { c.DrainAckWait = time.Hour }, func(d ws.Deps) ws.Deps {
		d.Producer = slowAcks{d.Producer, 2 * time.Second}
		return d
	})
	_, tok := e.user("alice")
	c := e.dial(tok, true, "")
	c.next("welcome")
	const n = 10
	for i := range n {
		c.send(map[string]any{"type": "send", "content": fmt.Sprint("m", i), "client_msg_id": fmt.Sprint("d-", i)})
	}
	stored := func() int {
		var k int
		if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM messages WHERE room_id = $1`, e.room).Scan(&k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	// All accepted (in the log and stored), none acked yet.
	testenv.Eventually(t, "the sends to be stored", func() bool { return stored() == n })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- e.srv.Drain(ctx) }()
	testenv.Eventually(t, "the drain to begin", func() bool { return !e.srv.Ready() })
	c.send(map[string]any{"type": "send", "content": "late", "client_msg_id": "late"})

	acked := map[string]bool{}
	refused := false
	_ = c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, b, err := c.c.ReadMessage()
		if err != nil {
			var ce *fws.CloseError
			if !errors.As(err, &ce) || ce.Code != ws.CloseGoingAway {
				t.Fatalf("connection ended with %v after acks %v, want 1001", err, acked)
			}
			break
		}
		var f map[string]any
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		switch {
		case f["type"] == "ack":
			acked[f["client_msg_id"].(string)] = true
		case f["type"] == "error" && f["client_msg_id"] == "late":
			if f["code"] != message.CodeUnavail {
				t.Fatalf("late send answered %v", f)
			}
			refused = true
		case f["type"] == "message" || f["type"] == "presence":
		default:
			t.Fatalf("unexpected frame %v", f)
		}
	}
	if len(acked) != n {
		t.Fatalf("closed with 1001 after %d of %d acks: %v", len(acked), n, acked)
	}
	if !refused {
		t.Fatal("the send read during the drain got no answer")
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if k := stored(); k != n {
		t.Fatalf("%d messages stored, want %d (the refused one must not be)", k, n)
	}
}

func TestTokenExpiryAndRevocationClose4001(t *testing.T) {
	e := newEnv(t, nil)
	_, shortTok := e.userExpiring("alice", time.Now().Add(2*time.Second), "")
	c := e.dial(shortTok, true, "")
	c.next("welcome")
	if code := c.closeCode(); code != ws.CloseTokenExpired {
		t.Fatalf("expiry close code %d", code)
	}

	family := "11111111-2222-4333-8444-555555555555"
	_, tok := e.userExpiring("bob", time.Now().Add(time.Hour), family)
	_, otherTok := e.user("carol")
	b := e.dial(tok, true, "")
	b.next("welcome")
	other := e.dial(otherTok, true, "")
	other.next("welcome")
	testenv.Eventually(t, "revocation subscriber", func() bool {
		n, _ := e.rdb.PubSubNumSub(context.Background(), auth.RevokedChannel(e.prefix)).Result()
		return n[auth.RevokedChannel(e.prefix)] > 0
	})
	if err := e.rdb.Publish(context.Background(), auth.RevokedChannel(e.prefix), family).Err(); err != nil {
		t.Fatal(err)
	}
	if code := b.closeCode(); code != ws.CloseTokenExpired {
		t.Fatalf("revocation close code %d", code)
	}
	other.send(map[string]any{"type": "ping"})
	other.next("pong")
}

// A live message that arrives after a gap (the fan-out skipped seqs) is
// preceded by the missing ones, read from PostgreSQL, in order; a gap the
// store cannot fill closes the socket with 4008 so that the client
// resumes.
func TestConnectionRepairsAGapFromTheStore(t *testing.T) {
	e := newEnv(t, nil)
	aliceID, tok := e.user("alice")
	c := e.dial(tok, true, "")
	if w := c.next("welcome"); w["last_seq"] != 0.0 {
		t.Fatalf("welcome %v", w)
	}
	// Three stored messages of which only the last is fanned out.
	ctx := context.Background()
	var stored []message.Message
	for i := 1; i <= 3; i++ {
		m := message.Message{
			ID:     fmt.Sprintf("0193a1b2-0000-7000-8000-%012d", i),
			RoomID: strconv.FormatInt(e.room, 10), UserID: strconv.FormatInt(aliceID, 10), Nickname: "alice",
			Seq: int64(i), Content: fmt.Sprintf("gap %d", i), TimeCreated: message.FormatTime(time.Now()),
		}
		if _, err := e.db.Pool.Exec(ctx, `INSERT INTO messages (room_id, seq, id, user_id, nickname, content, time_created)
			VALUES ($1,$2,$3,$4,$5,$6,now())`, e.room, m.Seq, m.ID, aliceID, m.Nickname, m.Content); err != nil {
			t.Fatal(err)
		}
		stored = append(stored, m)
	}
	if _, err := e.db.Pool.Exec(ctx, `UPDATE rooms SET last_seq = 3 WHERE id = $1`, e.room); err != nil {
		t.Fatal(err)
	}
	if err := e.fanOut(ctx, stored[2]); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 3; want++ {
		m := c.next("message")
		if m["seq"] != float64(want) || m["content"] != fmt.Sprintf("gap %d", want) {
			t.Fatalf("got %v, want seq %d", m, want)
		}
	}

	// Seq 10 while the store ends at 3: nothing can fill 4..9.
	late := stored[2]
	late.Seq, late.ID, late.Content = 10, "0193a1b2-0000-7000-8000-000000000010", "gap 10"
	if err := e.fanOut(ctx, late); err != nil {
		t.Fatal(err)
	}
	if code := c.closeCode(); code != ws.CloseTooSlow {
		t.Fatalf("close code %d, want %d", code, ws.CloseTooSlow)
	}
}
