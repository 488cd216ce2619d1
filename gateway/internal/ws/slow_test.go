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

	"rooms/gateway/internal/ratelimit"
	"rooms/gateway/internal/ws"
	"rooms/shared/message"
)

// A client that stops reading is closed with 4008 once its queue fills,
// while another client of the room keeps receiving everything.
func TestSlowReaderClosed4008(t *testing.T) {
	e := newEnv(t, func(c *ws.Config) {
		c.SendQueue = 64
		c.WriteTimeout = 2 * time.Minute
	})
	aliceID, tok := e.user("alice")

	d := fws.Dialer{
		Subprotocols: []string{ws.Subprotocol},
		// A bounded receive buffer (set before connecting, and well above
		// the loopback MSS) so the flood below overflows the buffers.
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
	slowConn, _, err := d.Dial(e.url(strconv.FormatInt(e.room, 10), ""), h)
	if err != nil {
		t.Fatal(err)
	}
	defer slowConn.Close()
	slow := &client{t: t, c: slowConn}
	slow.next("welcome")
	fast := e.dial(tok, true, "")
	fast.next("welcome")

	// Messages are added in chunks smaller than the queue, each once the
	// fast client has received the previous one, so only the slow client
	// falls behind.
	const n, chunk = 6000, 50
	content := strings.Repeat("x", 1500)
	for start := 1; start <= n; start += chunk {
		pipe := e.rdb.Pipeline()
		for i := start; i < start+chunk; i++ {
			b, _ := json.Marshal(message.Message{
				ID: "id-" + strconv.Itoa(i), Seq: int64(i), RoomID: strconv.FormatInt(e.room, 10),
				UserID: strconv.FormatInt(aliceID, 10), Nickname: "alice", Content: content,
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
	if code := slow.closeCode(); code != ws.CloseTooSlow {
		t.Fatalf("slow client close code %d", code)
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
