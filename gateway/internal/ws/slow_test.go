package ws_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
	"github.com/redis/go-redis/v9"

	"rooms/gateway/internal/presence"
	"rooms/gateway/internal/ratelimit"
	"rooms/gateway/internal/ws"
	"rooms/shared/message"
	"rooms/shared/testenv"
)

// A client that stops reading is closed with 4008 once its queue fills,
// while another client of the room keeps receiving everything.
func TestSlowReaderClosed4008(t *testing.T) {
	e := newEnv(t, func(c *ws.Config) {
		c.SendQueue = 64
		c.WriteTimeout = 2 * time.Minute
	})
	aliceID, tok := e.user("alice")
	slow := dialSlow(t, e, tok)
	slow.next("welcome")
	fast := e.dial(tok, true, "")
	fast.next("welcome")

	flood(t, e, fast, aliceID, 6000)
	if code := slow.closeCode(); code != ws.CloseTooSlow {
		t.Fatalf("slow client close code %d", code)
	}
}

// A socket write that makes no progress fails after WriteTimeout, and the
// connection ends, even while its queue has room (the write deadline is
// moved on only every half WriteTimeout, never left behind).
func TestStalledWriteTimesOut(t *testing.T) {
	e := newEnv(t, func(c *ws.Config) {
		c.SendQueue = 1 << 20
		c.WriteTimeout = time.Second
	})
	aliceID, aliceTok := e.user("alice")
	_, bobTok := e.user("bob")
	alice := e.dial(aliceTok, true, "")
	alice.next("welcome")
	bob := dialSlow(t, e, bobTok)
	bob.next("welcome")

	bobListed := func() bool {
		clients, err := presence.List(context.Background(), e.rdb, e.prefix, e.room, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range clients {
			if c.Nickname == "bob" {
				return true
			}
		}
		return false
	}
	if !bobListed() {
		t.Fatal("bob is not in the room's presence after his welcome")
	}
	// Bob stops reading; the flood fills his socket's buffers, and the
	// server's write to him stalls.
	flood(t, e, alice, aliceID, 6000)
	// Only the stalled write failing can end bob's connection: his client
	// keeps its socket open, and his queue never fills. Its end shows in
	// the room's presence (alice's flood skips presence events, and the
	// leave may come while it runs).
	testenv.Eventually(t, "bob's connection to end", func() bool { return !bobListed() })
}

// dialSlow connects with a bounded receive buffer (set before connecting,
// and well above the loopback MSS), so that a flood the client does not
// read overflows the buffers.
func dialSlow(t *testing.T, e *env, tok string) *client {
	t.Helper()
	d := fws.Dialer{
		Subprotocols: []string{ws.Subprotocol},
		NetDial: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 256<<10)
			})
			if err != nil {
				return err
			}
			return serr
		}}).Dial,
	}
	h := http.Header{"Authorization": {"Bearer " + tok}}
	conn, _, err := d.Dial(e.url(strconv.FormatInt(e.room, 10), ""), h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, c: conn}
}

// flood appends n messages of 1500 bytes from userID (seqs 1..n) to the
// room's fan-out stream and has fast receive each of them, in order.
// Messages are added in chunks smaller than any queue, each once fast has
// received the previous one, so only clients that do not read fall behind.
func flood(t *testing.T, e *env, fast *client, userID int64, n int) {
	t.Helper()
	const chunk = 50
	content := strings.Repeat("x", 1500)
	for start := 1; start <= n; start += chunk {
		pipe := e.rdb.Pipeline()
		for i := start; i < start+chunk; i++ {
			b, _ := json.Marshal(message.Message{
				ID: "id-" + strconv.Itoa(i), Seq: int64(i), RoomID: strconv.FormatInt(e.room, 10),
				UserID: strconv.FormatInt(userID, 10), Nickname: "alice", Content: content,
				TimeCreated: message.FormatTime(time.Now()),
			})
			pipe.XAdd(context.Background(), &redis.XAddArgs{
				Stream: message.FanoutStream(e.prefix, e.room),
				Values: []string{message.FieldKind, message.KindMessage, message.FieldData, string(b)},
			})
		}
		if _, err := pipe.Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
		for want := start; want < start+chunk; want++ {
			if m := fast.next("message"); m["seq"] != float64(want) {
				t.Fatalf("fast client got seq %v, want %v", m["seq"], want)
			}
		}
	}
}

func TestRateLimitedSends(t *testing.T) {
	e := newEnv(t, func(c *ws.Config) {
		c.SendLimit = ratelimit.Limit{Rate: 1, Burst: 1, Period: time.Hour}
		c.RateLimitClose = 3
	})
	_, tok := e.user("alice")
	c := e.dial(tok, true, "")
	c.next("welcome")
	// The accepted message's own delivery may arrive before or after its
	// ack and between the errors: skip message frames here.
	next := func(typ string) map[string]any {
		for {
			f := c.frame()
			if f["type"] == typ {
				return f
			}
			switch f["type"] {
			case "message", "presence", "typing", "ack":
			default:
				t.Fatalf("got %v while waiting for %s", f, typ)
			}
		}
	}
	c.send(map[string]any{"type": "send", "content": "a", "client_msg_id": "1"})
	if a := next("ack"); a["client_msg_id"] != "1" {
		t.Fatalf("ack %v", a)
	}
	for _, id := range []string{"2", "3"} {
		c.send(map[string]any{"type": "send", "content": "a", "client_msg_id": id})
		if f := next("error"); f["code"] != "rate_limited" || f["client_msg_id"] != id {
			t.Fatalf("error %v", f)
		}
	}
	c.send(map[string]any{"type": "send", "content": "a", "client_msg_id": "4"})
	if code := c.closeCode(); code != ws.CloseRateLimited {
		t.Fatalf("close code %d", code)
	}
}
