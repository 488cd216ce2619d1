package ws_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rooms/gateway/internal/produce"
	"rooms/gateway/internal/ws"
	"rooms/shared/message"
	"rooms/shared/testenv"
)

// wantRefused checks a refused handshake's status, code and Retry-After.
func wantRefused(t *testing.T, resp *http.Response, err error, status int, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("handshake accepted, want %d %s", status, code)
	}
	if resp == nil {
		t.Fatalf("no response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	var got struct{ Code, Message string }
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if resp.StatusCode != status || got.Code != code || got.Message == "" {
		t.Fatalf("got %d %s, want %d %s", resp.StatusCode, body, status, code)
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || secs < 1 {
		t.Fatalf("Retry-After = %q", resp.Header.Get("Retry-After"))
	}
}

func TestConnectionLimits(t *testing.T) {
	e := newEnv(t, func(c *ws.Config) { c.MaxConns = 3; c.MaxConnsPerUser = 2 })
	_, alice := e.user("alice")
	_, bob := e.user("bob")
	_, carol := e.user("carol")

	a1 := e.dial(alice, true, "")
	a1.next("welcome")
	a2 := e.dial(alice, false, "")
	a2.read()
	_, resp, err := e.tryDial(alice, true, "", nil)
	wantRefused(t, resp, err, http.StatusTooManyRequests, "rate_limited")

	// Handshakes that pass every check but fail the upgrade itself (no
	// Sec-WebSocket-Key) must not keep a slot.
	for i := 0; i < 5; i++ {
		badUpgrade(t, e, bob)
	}
	b1 := e.dial(bob, true, "")
	b1.next("welcome")
	_, resp, err = e.tryDial(carol, true, "", nil)
	wantRefused(t, resp, err, http.StatusServiceUnavailable, "unavailable")

	// A closed connection frees its slot.
	a1.c.Close()
	e.dialEventually(carol, true).next("welcome")
}

// dialEventually dials until the handshake is accepted: a slot is released
// only after the connection it belonged to has cleaned up.
func (e *env) dialEventually(token string, v2 bool) *client {
	e.t.Helper()
	var c *client
	testenv.Eventually(e.t, "a free connection slot", func() bool {
		var resp *http.Response
		var err error
		c, resp, err = e.tryDial(token, v2, "", nil)
		if err != nil && resp != nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return c
}

// badUpgrade sends an upgrade request that passes the gateway's checks but
// that the WebSocket upgrader refuses, and expects a 4xx answer.
func badUpgrade(t *testing.T, e *env, token string) {
	t.Helper()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "GET /api/chat/rooms/%d HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n", e.room, token)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Fatalf("bad upgrade answered %d", resp.StatusCode)
	}
}

// panickyProducer panics on the content "panic!", standing in for a bug in
// the path of a client's send.
type panickyProducer struct{ ws.Producer }

func (p panickyProducer) Send(m message.Message, done produce.Callback) error {
	if m.Content == "panic!" {
		panic("injected panic in send")
	}
	return p.Producer.Send(m, done)
}

// panickyStore panics when a connection's writer repairs a gap, standing in
// for a bug in the writer goroutine.
type panickyStore struct{ ws.Store }

func (s panickyStore) MessagesAfter(ctx context.Context, roomID, afterSeq int64, limit int) ([]message.Message, error) {
	if strings.Contains(string(debug.Stack()), "(*conn).repair") {
		panic("injected panic in gap repair")
	}
	return s.Store.MessagesAfter(ctx, roomID, afterSeq, limit)
}

func TestPanicInConnectionIsContained(t *testing.T) {
	e := newEnvWith(t, func(c *ws.Config) { c.MaxConnsPerUser = 1 }, func(d ws.Deps) ws.Deps {
		d.Producer = panickyProducer{d.Producer}
		d.Store = panickyStore{d.Store}
		return d
	})
	_, alice := e.user("alice")
	_, bob := e.user("bob")
	b := e.dial(bob, true, "")
	b.next("welcome")

	// In the reader goroutine.
	a := e.dial(alice, true, "")
	a.next("welcome")
	a.send(map[string]any{"type": "send", "content": "panic!", "client_msg_id": "p"})
	if code := a.closeCode(); code != ws.CloseInternal {
		t.Fatalf("reader panic: close code %d, want 1011", code)
	}
	// The process and the other connections live on, and the panicking
	// connection gave its slot back (one per user here).
	b.send(map[string]any{"type": "ping"})
	b.next("pong")
	legacy := e.dialEventually(alice, false)
	legacy.read()

	// In the writer goroutine: a seq jump makes the writer repair the gap.
	m := message.Message{ID: "0193a1b2-0000-7000-8000-000000000005", Seq: 5, RoomID: strconv.FormatInt(e.room, 10),
		UserID: "1", Nickname: "alice", Content: "x", TimeCreated: message.FormatTime(time.Now())}
	b2, _ := json.Marshal(m)
	if err := e.rdb.XAdd(context.Background(), &redis.XAddArgs{
		Stream: message.FanoutStream(e.prefix, e.room),
		Values: []string{message.FieldKind, message.KindMessage, message.FieldData, string(b2)},
	}).Err(); err != nil {
		t.Fatal(err)
	}
	if code := legacy.closeCode(); code != ws.CloseInternal {
		t.Fatalf("writer panic: close code %d, want 1011", code)
	}
	if code := b.closeCode(); code != ws.CloseInternal {
		t.Fatalf("writer panic (v2): close code %d, want 1011", code)
	}
	// Still serving.
	e.dialEventually(bob, true).next("welcome")
}
