package ws_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"rooms/gateway/internal/ws"
	"rooms/shared/testenv"
)

// An idle socket costs one goroutine, its reader: a writer runs only while
// there is something to write, and the handshake's goroutine ends once the
// socket is open. Delivering to every socket brings writers up and they end
// again.
func TestIdleConnectionsHoldOneGoroutineEach(t *testing.T) {
	e := newEnv(t, nil)
	const users, perUser = 3, 10
	n := users * perUser
	var toks []string
	for i := range users {
		_, tok := e.user(fmt.Sprintf("user%d", i))
		toks = append(toks, tok)
	}
	// One socket first, so that what the server starts once (the fan-out
	// reader's room, pools) is in the baseline.
	first := e.dial(toks[0], true, "")
	first.next("welcome")
	base := runtime.NumGoroutine()

	var clients []*client
	for i := range n {
		c := e.dial(toks[i%users], i%2 == 0, "")
		if i%2 == 0 {
			c.next("welcome")
		} else {
			c.read() // the legacy history frame
		}
		clients = append(clients, c)
	}
	// Slack for goroutines that come and go on their own (an idle HTTP
	// worker, a presence event being written); two per socket would be
	// far above it.
	const slack = 8
	settled := func(what string) {
		t.Helper()
		testenv.Eventually(t, fmt.Sprintf("%s: at most %d goroutines more than before for %d idle sockets", what, n+slack, n),
			func() bool { return runtime.NumGoroutine()-base <= n+slack })
	}
	settled("after connecting")

	first.send(map[string]any{"type": "send", "content": "to everyone", "client_msg_id": "all-1"})
	for i, c := range clients {
		if i%2 == 0 {
			if m := c.next("message"); m["content"] != "to everyone" {
				t.Fatalf("socket %d got %v", i, m)
			}
			continue
		}
		for {
			var m map[string]any
			if m = c.frame(); m["content"] == "to everyone" {
				break
			}
		}
	}
	settled("after a delivery to every socket")
}

// A server-side close ends the TCP connection even when the client never
// answers the close frame: the server waits a moment for the answer, then
// closes the socket itself rather than leave it to the read deadline.
func TestServerCloseEndsSocketWithoutClientAnswer(t *testing.T) {
	e := newEnv(t, func(c *ws.Config) { c.PongTimeout = 10 * time.Minute })
	_, tok := e.userExpiring("alice", time.Now().Add(3*time.Second), "")
	c := e.dial(tok, true, "")
	c.next("welcome")
	// Never answer the close frame.
	c.c.SetCloseHandler(func(int, string) error { return nil })
	_ = c.c.SetReadDeadline(time.Now().Add(time.Minute))
	var ce *fws.CloseError
	for {
		_, _, err := c.c.ReadMessage()
		if err == nil {
			continue
		}
		if !errors.As(err, &ce) {
			t.Fatalf("read: %v, want the close frame", err)
		}
		break
	}
	if ce.Code != ws.CloseTokenExpired {
		t.Fatalf("close code %d, want %d", ce.Code, ws.CloseTokenExpired)
	}
	// The server's wait for an answer is 2 s; the read deadline (here 10
	// minutes) would be far later.
	nc := c.c.NetConn()
	_ = nc.SetReadDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, 64)
	for {
		_, err := nc.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the server kept the socket open after its close frame went unanswered")
		}
		return // EOF or reset: the server closed it
	}
}

// The server pings an idle socket every PingInterval; a client that
// answers stays connected past PongTimeout.
func TestIdleSocketIsPingedAndKeptByPongs(t *testing.T) {
	e := newEnv(t, func(c *ws.Config) {
		c.PingInterval = 200 * time.Millisecond
		c.PongTimeout = 2 * time.Second
	})
	_, tok := e.user("alice")
	c := e.dial(tok, true, "")
	c.next("welcome")
	var pings atomic.Int64
	c.c.SetPingHandler(func(data string) error {
		pings.Add(1)
		return c.c.WriteControl(fws.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	// Read (which answers pings) until well past PongTimeout.
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, b, err := c.c.ReadMessage()
		if err == nil {
			t.Logf("frame while idle: %s", b)
			continue
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("idle socket ended: %v", err)
		}
		break
	}
	if got := pings.Load(); got < 3 {
		t.Fatalf("%d pings in 5 s at a 200 ms interval, want several", got)
	}
	// A timed-out read leaves the client's conn unusable for reads; a
	// fresh socket shows the server still serves this user.
	c2 := e.dial(tok, true, "")
	c2.next("welcome")
}

// Served by an HTTP server that does not keep hijacked connections, a
// socket is read by the handshake's goroutine instead; everything else
// works the same, closes included.
func TestSocketsWorkWhenHijackedConnsAreNotKept(t *testing.T) {
	e := newEnvServing(t, nil, nil, false)
	_, tok := e.user("alice")
	_, bobTok := e.user("bob")
	a := e.dial(tok, true, "")
	a.next("welcome")
	legacy := e.dial(bobTok, false, "")
	legacy.read()
	a.send(map[string]any{"type": "send", "content": "hello", "client_msg_id": "k-1"})
	// The ack and the message itself come in either order: the API does
	// not order them, and the delivery report can be slower than the
	// message's way through the worker and the stream.
	for acked, got := false, false; !acked || !got; {
		switch f := a.frame(); f["type"] {
		case "ack":
			if acked || f["client_msg_id"] != "k-1" {
				t.Fatalf("ack %v", f)
			}
			acked = true
		case "message":
			if got || f["content"] != "hello" {
				t.Fatalf("message %v", f)
			}
			got = true
		case "presence", "typing":
		default:
			t.Fatalf("got %v while waiting for the ack and the message", f)
		}
	}
	for {
		if m := legacy.frame(); m["content"] == "hello" {
			break
		}
	}
	_, short := e.userExpiring("carol", time.Now().Add(3*time.Second), "")
	c := e.dial(short, true, "")
	c.next("welcome")
	if code := c.closeCode(); code != ws.CloseTokenExpired {
		t.Fatalf("expiry close code %d", code)
	}
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		drained <- e.srv.Drain(ctx)
	}()
	if code := a.closeCode(); code != ws.CloseGoingAway {
		t.Fatalf("drain close code %d", code)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
}
