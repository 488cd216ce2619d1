package systest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"rooms/shared/testenv"
)

// user is a registered, logged-in account.
type user struct {
	ID, Nickname, Access, Refresh string
}

func doJSON(t *testing.T, method, url, token string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, url, raw, err)
		}
	}
	return resp.StatusCode
}

func newUser(t *testing.T, base string) *user {
	t.Helper()
	nick := "u" + testenv.RandomID(5)
	pw := "password-" + nick
	var reg struct{ UserID, Nickname string }
	if code := doJSON(t, "POST", base+"/api/user/register", "", map[string]string{"nickname": nick, "password": pw}, &reg); code != 200 {
		t.Fatalf("register: %d", code)
	}
	var login struct {
		UserID       string `json:"user_id"`
		Nickname     string `json:"nickname"`
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if code := doJSON(t, "POST", base+"/api/user/login", "", map[string]string{"nickname": nick, "password": pw}, &login); code != 200 {
		t.Fatalf("login: %d", code)
	}
	return &user{ID: login.UserID, Nickname: login.Nickname, Access: login.AccessToken, Refresh: login.RefreshToken}
}

func newRoom(t *testing.T, base string, u *user) string {
	t.Helper()
	var room struct{ ID string }
	if code := doJSON(t, "POST", base+"/api/chat/rooms", u.Access, map[string]string{"name": "room " + testenv.RandomID(3)}, &room); code != 200 {
		t.Fatalf("create room: %d", code)
	}
	return room.ID
}

// frame is one server frame as received.
type frame struct {
	Raw  []byte
	Type string `json:"type"`
	// message fields
	ID          string `json:"id"`
	Seq         int64  `json:"seq"`
	UserID      string `json:"user_id"`
	Nickname    string `json:"nickname"`
	Content     string `json:"content"`
	ClientMsgID string `json:"client_msg_id"`
	// welcome
	LastSeq   int64 `json:"last_seq"`
	Recovered bool  `json:"recovered"`
	// error / presence
	Code  string `json:"code"`
	Event string `json:"event"`
}

// wsClient is a connection to a room with a goroutine collecting its frames.
type wsClient struct {
	t      *testing.T
	conn   *websocket.Conn
	frames chan frame
	closed chan struct{}

	mu        sync.Mutex
	closeCode int
}

func wsURL(base, roomID string, q url.Values) string {
	return strings.Replace(base, "http://", "ws://", 1) + "/api/chat/rooms/" + roomID + "?" + q.Encode()
}

// dial opens a WebSocket; protocol "rooms.v2" or "" for legacy.
func dial(t *testing.T, base, roomID string, u *user, protocol string, q url.Values) *wsClient {
	t.Helper()
	if q == nil {
		q = url.Values{}
	}
	q.Set("access_token", "Bearer "+u.Access)
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	if protocol != "" {
		d.Subprotocols = []string{protocol}
	}
	conn, resp, err := d.Dial(wsURL(base, roomID, q), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial room %s: %v (status %d)", roomID, err, status)
	}
	if protocol != "" && conn.Subprotocol() != protocol {
		t.Fatalf("server chose subprotocol %q", conn.Subprotocol())
	}
	c := &wsClient{t: t, conn: conn, frames: make(chan frame, 100000), closed: make(chan struct{})}
	go c.read()
	t.Cleanup(func() { conn.Close() })
	return c
}

func (c *wsClient) read() {
	defer close(c.closed)
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if asClose(err, &ce) {
				c.mu.Lock()
				c.closeCode = ce.Code
				c.mu.Unlock()
			}
			return
		}
		f := frame{Raw: data}
		if len(data) > 0 && data[0] == '{' {
			_ = json.Unmarshal(data, &f)
		}
		c.frames <- f
	}
}

func asClose(err error, target **websocket.CloseError) bool {
	ce, ok := err.(*websocket.CloseError)
	if ok {
		*target = ce
	}
	return ok
}

// next returns the next frame or fails after the timeout.
func (c *wsClient) next(timeout time.Duration) frame {
	c.t.Helper()
	select {
	case f := <-c.frames:
		return f
	case <-time.After(timeout):
		c.t.Fatalf("no frame within %v", timeout)
		return frame{}
	}
}

func (c *wsClient) send(content, cmid string) {
	c.t.Helper()
	b, _ := json.Marshal(map[string]string{"type": "send", "content": content, "client_msg_id": cmid})
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *wsClient) writeText(s string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// collector tracks what one v2 client received.
type collector struct {
	seqs    []int64
	byCmid  map[string]int64
	acks    map[string]int
	errs    []frame
	other   []frame
	welcome frame
}

func newCollector() *collector {
	return &collector{byCmid: map[string]int64{}, acks: map[string]int{}}
}

func (col *collector) add(f frame) {
	switch f.Type {
	case "message":
		col.seqs = append(col.seqs, f.Seq)
		if f.ClientMsgID != "" {
			col.byCmid[f.UserID+"/"+f.ClientMsgID] = f.Seq
		}
	case "ack":
		col.acks[f.ClientMsgID]++
	case "error":
		col.errs = append(col.errs, f)
	case "welcome":
		col.welcome = f
	default:
		col.other = append(col.other, f)
	}
}

// drainUntil feeds frames to col until cond holds or the timeout passes.
func (c *wsClient) drainUntil(col *collector, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case f := <-c.frames:
			col.add(f)
		case <-deadline:
			var codes []string
			for _, e := range col.errs {
				codes = append(codes, e.Code+"/"+e.ClientMsgID)
			}
			c.t.Fatalf("condition not reached within %v (have %d messages, last %v, %d acks, %d errors %v)",
				timeout, len(col.seqs), lastOf(col.seqs), len(col.acks), len(codes), codes)
		}
	}
}

func lastOf(s []int64) int64 {
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1]
}

// checkGapless fails unless seqs is exactly from..to.
func checkGapless(t *testing.T, who string, seqs []int64, from, to int64) {
	t.Helper()
	if int64(len(seqs)) != to-from+1 {
		t.Fatalf("%s: got %d messages, want %d (seqs %v)", who, len(seqs), to-from+1, summarize(seqs))
	}
	for i, s := range seqs {
		if s != from+int64(i) {
			t.Fatalf("%s: position %d has seq %d, want %d (seqs %v)", who, i, s, from+int64(i), summarize(seqs))
		}
	}
}

func summarize(s []int64) string {
	if len(s) <= 20 {
		return fmt.Sprint(s)
	}
	return fmt.Sprint(s[:10], "…", s[len(s)-10:])
}
