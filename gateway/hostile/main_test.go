// Package hostile_test attacks the real gateway binary (and, where stored
// messages matter, the real worker binary) the way a hostile or broken
// client would: forged and stolen tokens, malformed and oversized frames,
// SQL metacharacters, floods, brute force, connection hoarding and
// slowloris handshakes. Each test starts its own processes against a fresh
// PostgreSQL database, its own Redis prefix and an embedded Kafka broker.
// docs/reliability.md lists every test with what it asserts.
package hostile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"rooms/shared/testenv"
)

// binDir holds the gateway and worker binaries, built once by TestMain.
var binDir string

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "rooms-hostile-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostile: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	if err := testenv.BuildBinaries(dir, nil, "rooms/gateway/cmd/gateway", "rooms/worker/cmd/worker"); err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		return 1
	}
	return m.Run()
}

// testSecret is the gateways' JWT_SECRET, so tests can forge tokens.
const testSecret = "hostile-test-secret-hostile-test-secret-0123"

// allowedOrigin is the one Origin the gateways under test accept.
const allowedOrigin = "http://app.example"

// stack is one gateway process, and a worker process when asked for, on a
// fresh database, Redis prefix and topic.
type stack struct {
	t    *testing.T
	base string // http://host:port of the gateway
	db   *testenv.Database
}

type opts struct {
	worker bool     // also run a worker, so messages are stored and delivered
	env    []string // extra gateway settings, NAME=value
}

func start(t *testing.T, o opts) *stack {
	t.Helper()
	db := testenv.Postgres(t)
	_, prefix := testenv.Redis(t)
	broker := testenv.Kafka(t)
	common := []string{
		"DATABASE_URL=" + db.DSN,
		"REDIS_ADDR=" + testenv.RedisAddr(),
		"REDIS_PREFIX=" + prefix,
		"KAFKA_BROKERS=" + strings.Join(broker.ListenAddrs(), ","),
		"KAFKA_TOPIC=chat.messages." + testenv.RandomID(4),
		"KAFKA_PARTITIONS=2",
		"LOG_LEVEL=info",
		"SHUTDOWN_TIMEOUT=10s",
	}
	if o.worker {
		run(t, "worker", append(append([]string{}, common...),
			"WORKER_ID=worker-1", "KAFKA_GROUP=rooms-workers-"+testenv.RandomID(4)), false)
	}
	// One P, as the local stack runs its gateways on a small machine: the
	// fan-out reader then writes to idle sockets itself (ws/deliver.go),
	// and the hostile clients here meet that path.
	env := append(append([]string{}, common...), "HTTP_ADDR=127.0.0.1:0", "GATEWAY_ID=gw-1",
		"JWT_SECRET="+testSecret, "ALLOWED_ORIGINS="+allowedOrigin, "GOMAXPROCS=1")
	addr := run(t, "gateway", append(env, o.env...), true)
	s := &stack{t: t, base: "http://" + addr, db: db}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("gateway not ready within 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run starts binary name with env. For the gateway (listens) it returns the
// address it logged. When the test ends it sends SIGTERM and expects a clean
// exit; output is shown when the test failed.
func run(t *testing.T, name string, env []string, listens bool) string {
	t.Helper()
	if !listens {
		testenv.StartBinary(t, filepath.Join(binDir, name), env, 60*time.Second)
		return ""
	}
	return testenv.StartBinary(t, filepath.Join(binDir, name), env, 60*time.Second, "http listening").Addrs["http listening"]
}

// httpClient opens a connection per request. With keep-alive, a burst of
// concurrent requests leaves spare connections that never carried a request
// in the client's pool, and the gateway's shutdown waits for those (see
// docs/reliability.md).
var httpClient = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// response is an HTTP answer.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends a JSON request (body nil: none) with an optional bearer token
// and extra headers in name, value pairs.
func (s *stack) do(method, path, token string, body any, headers ...string) response {
	s.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.base+path, r)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// wantError checks an error answer: status, code, a message, nothing else.
func wantError(t *testing.T, status int, header http.Header, body []byte, wantStatus int, code string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status %d, want %d; body %s", status, wantStatus, body)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("error body is not JSON: %q", body)
	}
	if msg, _ := m["message"].(string); len(m) != 2 || m["code"] != code || msg == "" {
		t.Fatalf("body %s, want code %q and a message", body, code)
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q", ct)
	}
}

// session is a logged-in user.
type session struct {
	UserID       string `json:"user_id"`
	Nickname     string `json:"nickname"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

func (s *stack) register(nick string) {
	s.t.Helper()
	if r := s.do("POST", "/api/user/register", "", map[string]string{"nickname": nick, "password": "password-" + nick}); r.Status != 200 {
		s.t.Fatalf("register %s: %d %s", nick, r.Status, r.Body)
	}
}

func (s *stack) login(nick string) session {
	s.t.Helper()
	r := s.do("POST", "/api/user/login", "", map[string]string{"nickname": nick, "password": "password-" + nick})
	var sess session
	if r.Status != 200 || json.Unmarshal(r.Body, &sess) != nil {
		s.t.Fatalf("login %s: %d %s", nick, r.Status, r.Body)
	}
	return sess
}

// user registers and logs in nick.
func (s *stack) user(nick string) session {
	s.t.Helper()
	s.register(nick)
	return s.login(nick)
}

// room creates a room named name and returns its id.
func (s *stack) room(token, name string) string {
	s.t.Helper()
	r := s.do("POST", "/api/chat/rooms", token, map[string]string{"name": name})
	var room struct{ ID string }
	if r.Status != 200 || json.Unmarshal(r.Body, &room) != nil {
		s.t.Fatalf("create room: %d %s", r.Status, r.Body)
	}
	return room.ID
}

func (s *stack) wsURL(room string, q url.Values) string {
	u := strings.Replace(s.base, "http://", "ws://", 1) + "/api/chat/rooms/" + room
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// dialWS opens a WebSocket to room with token in the Authorization header
// (when set) and extra headers; v2 requests rooms.v2. On a refused
// handshake it returns the answer.
func (s *stack) dialWS(room, token string, v2 bool, q url.Values, h http.Header) (*wsConn, response, error) {
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second}
	if v2 {
		d.Subprotocols = []string{"rooms.v2"}
	}
	if h == nil {
		h = http.Header{}
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	c, resp, err := d.Dial(s.wsURL(room, q), h)
	if err != nil {
		var r response
		if resp != nil {
			r.Status, r.Header = resp.StatusCode, resp.Header
			r.Body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		return nil, r, err
	}
	s.t.Cleanup(func() { c.Close() })
	return &wsConn{t: s.t, c: c}, response{}, nil
}

// mustWS is dialWS that fails the test on a refused handshake.
func (s *stack) mustWS(room, token string, v2 bool) *wsConn {
	s.t.Helper()
	c, r, err := s.dialWS(room, token, v2, nil, nil)
	if err != nil {
		s.t.Fatalf("dial room %s: %v (%d %s)", room, err, r.Status, r.Body)
	}
	return c
}

// wsConn is a client WebSocket read from the test's goroutine.
type wsConn struct {
	t *testing.T
	c *websocket.Conn
}

// frame is any server frame.
type frame struct {
	Type        string `json:"type"`
	Code        string `json:"code"`
	Message     string `json:"message"`
	ClientMsgID string `json:"client_msg_id"`
	Seq         int64  `json:"seq"`
	UserID      string `json:"user_id"`
	Content     string `json:"content"`
	LastSeq     int64  `json:"last_seq"`
}

// read returns the next frame's bytes, failing the test on an error.
func (c *wsConn) read() []byte {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(60 * time.Second))
	_, b, err := c.c.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return b
}

func (c *wsConn) frame() frame {
	c.t.Helper()
	b := c.read()
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		c.t.Fatalf("frame %q: %v", b, err)
	}
	return f
}

// next skips presence and typing frames and returns the next other one.
func (c *wsConn) next() frame {
	c.t.Helper()
	for {
		if f := c.frame(); f.Type != "presence" && f.Type != "typing" {
			return f
		}
	}
}

func (c *wsConn) write(b []byte) {
	c.t.Helper()
	if err := c.c.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *wsConn) send(content, cmid string) {
	c.t.Helper()
	b, _ := json.Marshal(map[string]string{"type": "send", "content": content, "client_msg_id": cmid})
	c.write(b)
}

// closeCode reads until the server closes the connection and returns the
// close code (-1 when the connection ended without a close frame).
func (c *wsConn) closeCode() int {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		_, _, err := c.c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatal("connection still open after 60s")
		}
		return -1
	}
}

// ctx is a context for a test's Redis and database calls.
func ctx() context.Context { return context.Background() }

func jsonInto(b []byte, v any) error { return json.Unmarshal(b, v) }
