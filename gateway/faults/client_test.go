//go:build faults

package faults

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"rooms/shared/testenv"
)

var httpClient = &http.Client{Timeout: 20 * time.Second}

func doJSON(method, url, token string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == 200 && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %q: %w", raw, err)
		}
	}
	return resp.StatusCode, nil
}

// user is a registered, logged-in account.
type user struct {
	ID, Nickname, Access string
}

func newUser(t *testing.T, base string) *user {
	t.Helper()
	nick := "u" + testenv.RandomID(5)
	pw := "password-" + nick
	if code, err := doJSON("POST", base+"/api/user/register", "", map[string]string{"nickname": nick, "password": pw}, nil); code != 200 {
		t.Fatalf("register: %d %v", code, err)
	}
	var login struct {
		UserID      string `json:"user_id"`
		Nickname    string `json:"nickname"`
		AccessToken string `json:"access_token"`
	}
	if code, err := doJSON("POST", base+"/api/user/login", "", map[string]string{"nickname": nick, "password": pw}, &login); code != 200 {
		t.Fatalf("login: %d %v", code, err)
	}
	return &user{ID: login.UserID, Nickname: login.Nickname, Access: login.AccessToken}
}

func newRoom(t *testing.T, base string, u *user) string {
	t.Helper()
	var room struct{ ID string }
	if code, err := doJSON("POST", base+"/api/chat/rooms", u.Access, map[string]string{"name": "room " + testenv.RandomID(3)}, &room); code != 200 {
		t.Fatalf("create room: %d %v", code, err)
	}
	return room.ID
}

// frame is one server frame.
type frame struct {
	Type        string `json:"type"`
	ID          string `json:"id"`
	Seq         int64  `json:"seq"`
	RoomID      string `json:"room_id"`
	UserID      string `json:"user_id"`
	Content     string `json:"content"`
	ClientMsgID string `json:"client_msg_id"`
	LastSeq     int64  `json:"last_seq"`
	Recovered   bool   `json:"recovered"`
	Code        string `json:"code"`
}

// Outcomes of one send attempt, as the client saw it.
const (
	outAck     = "ack"
	outError   = "error"   // an error frame with the client_msg_id: outcome unknown
	outNone    = "none"    // no answer: the socket died or the wait timed out
	outRefused = "refused" // an error that says the message is invalid (never expected)
)

// op is one client_msg_id's history: every attempt and its outcome.
type op struct {
	Client   string
	Room     string
	UserID   string
	CMID     string
	Index    int
	Attempts []string
	Codes    []string
	Sent     time.Time // first attempt
	Acked    bool
	// Burst: sent without waiting for the previous message's ack, so
	// per-sender order does not apply.
	Burst bool
}

// client is a rooms.v2 client of one room that reconnects (jittered,
// capped backoff, alternating gateways) and resumes with since_seq.
type client struct {
	t    *testing.T
	name string
	s    *stack
	u    *user
	room string
	gw   int // gateway index to try next

	mu         sync.Mutex
	conn       *websocket.Conn
	dead       chan struct{} // closed when conn's reader ends
	seqs       []int64       // every delivered seq, in arrival order, across connections
	firstSeen  map[string]time.Time
	waiters    map[string]chan string
	closeCodes []int
	reconnects int
	notRecov   int
	ops        []*op
}

func newClient(t *testing.T, s *stack, name string, u *user, room string, gw int) *client {
	return &client{t: t, name: name, s: s, u: u, room: room, gw: gw,
		firstSeen: map[string]time.Time{}, waiters: map[string]chan string{}}
}

// last is the last seq delivered to this client.
func (c *client) last() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seqs) == 0 {
		return 0
	}
	return c.seqs[len(c.seqs)-1]
}

func (c *client) delivered() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64{}, c.seqs...)
}

// connected reports whether the client has a live socket.
func (c *client) connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return false
	}
	select {
	case <-c.dead:
		return false
	default:
		return true
	}
}

// connect dials until a socket is open or the deadline passes; it resumes
// after the last delivered seq. Backoff: 50 ms doubling to 2 s, with full
// jitter; every failure moves to the next gateway.
func (c *client) connect(deadline time.Time) error {
	backoff := 50 * time.Millisecond
	var lastErr error
	for attempt := 0; ; attempt++ {
		if c.connected() {
			return nil
		}
		err := c.dialOnce()
		if err == nil {
			return nil
		}
		lastErr = err
		c.gw = (c.gw + 1) % len(c.s.gateways)
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no connection after %d attempts: %w", c.name, attempt+1, lastErr)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(backoff))) + 10*time.Millisecond)
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (c *client) dialOnce() error {
	base := c.s.url(c.gw)
	q := url.Values{}
	q.Set("access_token", "Bearer "+c.u.Access)
	since := c.last()
	q.Set("since_seq", strconv.FormatInt(since, 10))
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{"rooms.v2"}}
	u := strings.Replace(base, "http://", "ws://", 1) + "/api/chat/rooms/" + c.room + "?" + q.Encode()
	conn, resp, err := d.Dial(u, nil)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("dial %s: %w (status %d)", base, err, resp.StatusCode)
		}
		return fmt.Errorf("dial %s: %w", base, err)
	}
	// The welcome comes first; a resume that cannot be replayed is paged
	// over REST before any later frame is read.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		return fmt.Errorf("read welcome: %w", err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	var w frame
	if err := json.Unmarshal(data, &w); err != nil || w.Type != "welcome" {
		conn.Close()
		return fmt.Errorf("first frame %s", data)
	}
	if !w.Recovered {
		c.mu.Lock()
		c.notRecov++
		c.mu.Unlock()
		if err := c.page(base, since, w.LastSeq); err != nil {
			conn.Close()
			return err
		}
	}
	dead := make(chan struct{})
	c.mu.Lock()
	if c.conn != nil {
		c.reconnects++
	}
	c.conn, c.dead = conn, dead
	c.mu.Unlock()
	go c.read(conn, dead)
	return nil
}

// page fetches seqs after..upto over REST (a resume beyond the replay limit).
func (c *client) page(base string, after, upto int64) error {
	for after < upto {
		var msgs []frame
		code, err := doJSON("GET", fmt.Sprintf("%s/api/chat/rooms/%s/messages?after_seq=%d&limit=200", base, c.room, after), c.u.Access, nil, &msgs)
		if code != 200 || len(msgs) == 0 {
			return fmt.Errorf("page after %d: %d %v", after, code, err)
		}
		from := after
		for _, m := range msgs {
			if m.Seq != after+1 || m.Seq > upto {
				break
			}
			c.deliver(m)
			after = m.Seq
		}
		if after == from {
			return fmt.Errorf("page after %d: no progress (first seq %d)", after, msgs[0].Seq)
		}
	}
	return nil
}

func (c *client) deliver(f frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seqs = append(c.seqs, f.Seq)
	if f.ClientMsgID != "" {
		k := f.UserID + "/" + f.ClientMsgID
		if _, ok := c.firstSeen[k]; !ok {
			c.firstSeen[k] = time.Now()
		}
	}
}

func (c *client) read(conn *websocket.Conn, dead chan struct{}) {
	defer func() {
		c.mu.Lock()
		// Every attempt waiting on this socket has no answer now.
		for cmid, w := range c.waiters {
			w <- outNone
			delete(c.waiters, cmid)
		}
		c.mu.Unlock()
		close(dead)
	}()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			code := 1006
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code = ce.Code
			}
			c.mu.Lock()
			c.closeCodes = append(c.closeCodes, code)
			c.mu.Unlock()
			return
		}
		var f frame
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		switch f.Type {
		case "message":
			c.deliver(f)
		case "ack", "error":
			if f.ClientMsgID == "" {
				continue
			}
			out := outAck
			if f.Type == "error" {
				out = outError
				if f.Code != "unavailable" {
					out = outRefused + ":" + f.Code
				}
			}
			c.mu.Lock()
			if w, ok := c.waiters[f.ClientMsgID]; ok {
				w <- out
				delete(c.waiters, f.ClientMsgID)
			}
			c.mu.Unlock()
		}
	}
}

// attempt sends cmid once on the current socket and returns a channel that
// gets its outcome (ack, error, or none when the socket dies).
func (c *client) attempt(cmid, content string) <-chan string {
	res := make(chan string, 1)
	b, _ := json.Marshal(map[string]string{"type": "send", "content": content, "client_msg_id": cmid})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		res <- outNone
		return res
	}
	if old, ok := c.waiters[cmid]; ok {
		old <- outNone
	}
	c.waiters[cmid] = res
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		delete(c.waiters, cmid)
		res <- outNone
	}
	return res
}

// forget drops the waiter of cmid (its wait timed out).
func (c *client) forget(cmid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.waiters, cmid)
}

// newOp records message k in the client's history.
func (c *client) newOp(k int) *op {
	o := &op{Client: c.name, Room: c.room, UserID: c.u.ID, CMID: fmt.Sprintf("%s-%d", c.name, k), Index: k, Sent: time.Now()}
	c.mu.Lock()
	c.ops = append(c.ops, o)
	c.mu.Unlock()
	return o
}

func (c *client) content(o *op) string { return fmt.Sprintf("%s message %d", c.name, o.Index) }

// note records one attempt's outcome.
func (c *client) note(o *op, out string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o.Attempts = append(o.Attempts, out)
	if out == outAck {
		o.Acked = true
	}
}

// sendUntilAcked sends message k, retrying it with the same client_msg_id
// after an unknown outcome (at most maxTries times, and not past deadline).
// It records every attempt in the client's history.
func (c *client) sendUntilAcked(k, maxTries int, answerWait time.Duration, deadline time.Time) *op {
	o := c.newOp(k)
	c.retry(o, maxTries, answerWait, deadline)
	return o
}

// retry sends o until it is acked (at most maxTries more attempts, not past
// deadline), with jittered, capped backoff between attempts.
func (c *client) retry(o *op, maxTries int, answerWait time.Duration, deadline time.Time) {
	backoff := 100 * time.Millisecond
	for try := 0; try < maxTries && time.Now().Before(deadline); try++ {
		if err := c.connect(deadline); err != nil {
			return
		}
		var out string
		select {
		case out = <-c.attempt(o.CMID, c.content(o)):
		case <-time.After(answerWait):
			c.forget(o.CMID)
			out = outNone
		}
		c.note(o, out)
		if out == outAck || strings.HasPrefix(out, outRefused) {
			return
		}
		time.Sleep(time.Duration(rand.Int64N(int64(backoff))) + 20*time.Millisecond)
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (c *client) close() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

func (c *client) history() []*op {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*op, len(c.ops))
	for i, o := range c.ops {
		cp := *o
		cp.Attempts = append([]string{}, o.Attempts...)
		out[i] = &cp
	}
	return out
}
