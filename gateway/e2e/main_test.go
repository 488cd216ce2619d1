// Package e2e_test starts the real gateway binary against a fresh
// PostgreSQL database and its own Redis prefix, and drives its REST API
// over HTTP the way a client would.
package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rooms/shared/testenv"
)

// binary is the gateway built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "rooms-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "gateway")
	if err := testenv.BuildBinaries(dir, nil, "rooms/gateway/cmd/gateway"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// testSecret is the JWT_SECRET the gateways under test run with, so tests
// can forge tokens.
const testSecret = "e2e-test-secret-e2e-test-secret-e2e-test-secret"

// gateway is one running gateway process.
type gateway struct {
	t      *testing.T
	base   string
	db     *testenv.Database
	rdb    *redis.Client
	prefix string
	client *http.Client
}

// start runs the gateway binary on a free port against a fresh database and
// Redis prefix, with extra environment settings, and waits until /readyz
// answers 200. When the test ends it sends SIGTERM and checks exit code 0.
func start(t *testing.T, env ...string) *gateway {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	return startOn(t, testenv.Postgres(t), testenv.RedisAddr(), rdb, prefix, env...)
}

// startOn is start against the given database and Redis server.
func startOn(t *testing.T, db *testenv.Database, redisAddr string, rdb *redis.Client, prefix string, env ...string) *gateway {
	t.Helper()
	broker := testenv.Kafka(t)

	gw := testenv.StartBinary(t, binary, append([]string{
		"HTTP_ADDR=127.0.0.1:0",
		"DATABASE_URL=" + db.DSN,
		"REDIS_ADDR=" + redisAddr,
		"REDIS_PREFIX=" + prefix,
		"KAFKA_BROKERS=" + broker.ListenAddrs()[0],
		"KAFKA_PARTITIONS=2",
		"JWT_SECRET=" + testSecret,
		"LOG_LEVEL=debug",
		"SHUTDOWN_TIMEOUT=10s",
	}, env...), 60*time.Second, "http listening")
	addr, output := gw.Addrs["http listening"], gw.Out
	g := &gateway{t: t, base: "http://" + addr, db: db, rdb: rdb, prefix: prefix,
		client: &http.Client{Timeout: 30 * time.Second}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := g.client.Get(g.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready within 60s; output:\n%s", output.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return g
}

// response is an HTTP answer.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends a request. body is sent as is when it is a string or []byte,
// and JSON-encoded otherwise (nil: no body). token, when set, is sent as a
// bearer token. Extra headers come in name, value pairs.
func (g *gateway) do(method, path, token string, body any, headers ...string) response {
	g.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			g.t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, g.base+path, r)
	if err != nil {
		g.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := g.client.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// wantError checks that r is the error status and code, in the documented
// shape (exactly "code" and a non-empty "message").
func wantError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
	var body map[string]any
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("error body is not JSON: %q", r.Body)
	}
	if len(body) != 2 || body["code"] != code {
		t.Fatalf("body = %s, want code %q and a message only", r.Body, code)
	}
	if msg, _ := body["message"].(string); msg == "" {
		t.Fatalf("body = %s, want a message", r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q", ct)
	}
}

// wantJSON checks status 200 and decodes the body into dst.
func wantJSON(t *testing.T, r response, dst any) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %s", r.Status, r.Body)
	}
	if err := json.Unmarshal(r.Body, dst); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// wantKeys checks that the JSON object in data has exactly the given keys.
func wantKeys(t *testing.T, data []byte, keys ...string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	if len(m) != len(keys) {
		t.Fatalf("body %s: want exactly keys %v", data, keys)
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Fatalf("body %s: missing key %q", data, k)
		}
	}
	return m
}

type session struct {
	UserID       string `json:"user_id"`
	Nickname     string `json:"nickname"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
}

// register creates a user and returns its id.
func (g *gateway) register(nickname, password string) string {
	g.t.Helper()
	var u struct {
		UserID string `json:"user_id"`
	}
	wantJSON(g.t, g.do("POST", "/api/user/register", "", map[string]string{"nickname": nickname, "password": password}), &u)
	return u.UserID
}

// login logs in and returns the session.
func (g *gateway) login(nickname, password string) session {
	g.t.Helper()
	var s session
	wantJSON(g.t, g.do("POST", "/api/user/login", "", map[string]string{"nickname": nickname, "password": password}), &s)
	return s
}

// user registers and logs in a fresh user.
func (g *gateway) user(nickname string) session {
	g.t.Helper()
	g.register(nickname, "password-"+nickname)
	return g.login(nickname, "password-"+nickname)
}
