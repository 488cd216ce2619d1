// Package proxytest_test runs the real nginx with the proxy's configuration
// (proxy/nginx.conf.template, rendered by proxy/render.sh, as the local stack
// does) in front of real gateway binaries, on spare ports, and checks what the
// proxy adds: the browser app with its fallback, compression, caching and
// security headers; /api and WebSockets on every gateway; the client address
// the gateways see; and the API's JSON error shape for the proxy's own errors.
package proxytest_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"rooms/shared/testenv"
)

var (
	gatewayBin string // built once by TestMain
	nginxBin   string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	if nginxBin, err = exec.LookPath("nginx"); err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			fmt.Fprintln(os.Stderr, "proxytest: nginx is not installed (go tool task setup installs it):", err)
			return 1
		}
		nginxBin = "/usr/sbin/nginx"
	}
	dir, err := os.MkdirTemp("", "rooms-proxytest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxytest: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	gatewayBin = filepath.Join(dir, "gateway")
	if err := testenv.BuildBinaries(dir, nil, "rooms/gateway/cmd/gateway"); err != nil {
		fmt.Fprintln(os.Stderr, "proxytest:", err)
		return 1
	}
	return m.Run()
}

// process is a started binary that the test's cleanup stops.
type process struct {
	name   string
	cmd    *exec.Cmd
	output *testenv.Output
	done   chan struct{}
}

func startProcess(t *testing.T, name string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, output: &testenv.Output{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("---- output of %s ----\n%s", name, p.output.String())
		}
	})
	return p
}

// stop signals the process and waits for it (killing it after 30 s).
func (p *process) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitOK waits until url answers 200 while the process runs.
func (p *process) waitOK(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s answered; output:\n%s", p.name, url, p.output.String())
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %s did not answer 200 within 60s; output:\n%s", p.name, url, p.output.String())
}

func freeAddr(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
}

// startGateways runs n gateway binaries sharing a fresh database, Redis
// prefix and broker, with extra settings. It returns their addresses, their
// processes and a function listing the Redis keys of the prefix that match
// a pattern.
func startGateways(t *testing.T, n int, extra ...string) ([]string, []*process, func(pattern string) []string) {
	t.Helper()
	db := testenv.Postgres(t)
	rdb, prefix := testenv.Redis(t)
	broker := testenv.Kafka(t)
	var addrs []string
	var procs []*process
	for i := 1; i <= n; i++ {
		addr := freeAddr(t)
		cmd := exec.Command(gatewayBin)
		cmd.Env = append([]string{
			"PATH=" + os.Getenv("PATH"),
			"HTTP_ADDR=" + addr,
			fmt.Sprintf("GATEWAY_ID=gw-%d", i),
			"DATABASE_URL=" + db.DSN,
			"REDIS_ADDR=" + testenv.RedisAddr(),
			"REDIS_PREFIX=" + prefix,
			"KAFKA_BROKERS=" + strings.Join(broker.ListenAddrs(), ","),
			"KAFKA_PARTITIONS=2",
			"JWT_SECRET=proxytest-secret-proxytest-secret-proxytest",
			"TRUSTED_PROXIES=127.0.0.1",
			"LOG_LEVEL=debug",
			"SHUTDOWN_TIMEOUT=5s",
		}, extra...)
		p := startProcess(t, fmt.Sprintf("gateway %d", i), cmd)
		p.waitOK(t, "http://"+addr+"/readyz")
		addrs = append(addrs, addr)
		procs = append(procs, p)
	}
	keys := func(pattern string) []string {
		ks, err := rdb.Keys(context.Background(), prefix+pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		return ks
	}
	return addrs, procs, keys
}

// Files of the stand-in browser app.
const indexHTML = "<!doctype html><title>Rooms</title><div id=root></div><script type=module src=/assets/app-3f9a1c.js></script>\n"

var appJS = strings.Repeat("console.log('the app, compressible, bigger than gzip_min_length');\n", 100)

// writeApp writes a stand-in for frontend/dist and returns its folder.
func writeApp(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dist")
	if err := os.MkdirAll(filepath.Join(dir, "assets"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"index.html":            indexHTML,
		"assets/app-3f9a1c.js":  appJS,
		"assets/app-77e0d2.css": "body{margin:0}\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// proxy is a running nginx with the proxy's configuration.
type proxy struct {
	addr   string // host:port
	base   string // http://host:port
	runDir string
}

// startProxy renders the configuration with proxy/render.sh for the given
// gateways and app folder and runs nginx with it, as scripts/stack.sh does.
func startProxy(t *testing.T, addr string, gateways []string, root string, env ...string) *proxy {
	t.Helper()
	if addr == "" {
		addr = freeAddr(t)
	}
	runDir := filepath.Join(t.TempDir(), "nginx")
	conf := filepath.Join(runDir, "nginx.conf")
	render := exec.Command(filepath.Join(testenv.RepoRoot(t), "proxy", "render.sh"), conf)
	render.Env = append(os.Environ(),
		"PROXY_ADDR="+addr,
		"PROXY_GATEWAYS="+strings.Join(gateways, ","),
		"PROXY_ROOT="+root,
		"PROXY_RUN_DIR="+runDir,
	)
	render.Env = append(render.Env, env...)
	if out, err := render.CombinedOutput(); err != nil {
		t.Fatalf("render.sh: %v\n%s", err, out)
	}
	p := startProcess(t, "nginx", exec.Command(nginxBin, "-p", runDir+"/", "-c", conf, "-e", "stderr", "-g", "daemon off;"))
	p.waitOK(t, "http://"+addr+"/healthz")
	return &proxy{addr: addr, base: "http://" + addr, runDir: runDir}
}

// response is an HTTP answer with its body read.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// client sends requests from the given loopback address (127.0.0.x), without
// asking for or undoing compression by itself.
func client(from string) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: d.DialContext, DisableCompression: true, DisableKeepAlives: true,
	}}
}

func do(t *testing.T, c *http.Client, method, url, token string, body any, headers ...string) response {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
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
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// wantError checks an API error: status, JSON content type and
// {"code","message"} body.
func wantError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var e struct{ Code, Message string }
	if err := json.Unmarshal(r.Body, &e); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.Body, err)
	}
	if e.Code != code || e.Message == "" {
		t.Fatalf("error %+v, want code %q and a message", e, code)
	}
}

// wantSecurityHeaders checks the headers every proxy response carries.
func wantSecurityHeaders(t *testing.T, r response, host string) {
	t.Helper()
	want := map[string]string{
		"X-Content-Type-Options": "nosniff",
		"X-Frame-Options":        "DENY",
		"Referrer-Policy":        "no-referrer",
	}
	for name, value := range want {
		if got := r.Header.Get(name); got != value {
			t.Errorf("%s = %q, want %q", name, got, value)
		}
	}
	csp := r.Header.Get("Content-Security-Policy")
	for _, part := range []string{
		"default-src 'self'",
		"script-src 'self'",
		"connect-src 'self' ws://" + host + " wss://" + host,
		"frame-ancestors 'none'",
		"object-src 'none'",
	} {
		if !strings.Contains(csp, part) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, part)
		}
	}
	if strings.Contains(csp, "unsafe-") {
		t.Errorf("Content-Security-Policy %q allows unsafe sources", csp)
	}
}

func TestStaticApp(t *testing.T) {
	p := startProxy(t, "", []string{freeAddr(t)}, writeApp(t))
	c := client("")

	for _, path := range []string{"/", "/index.html", "/rooms/42", "/login?next=%2Frooms"} {
		t.Run("index "+path, func(t *testing.T) {
			r := do(t, c, "GET", p.base+path, "", nil)
			if r.Status != http.StatusOK || string(r.Body) != indexHTML {
				t.Fatalf("GET %s: %d %q, want the app's index.html", path, r.Status, r.Body)
			}
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
				t.Errorf("Content-Type %q", ct)
			}
			if cc := r.Header.Get("Cache-Control"); cc != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", cc)
			}
			wantSecurityHeaders(t, r, p.addr)
		})
	}

	t.Run("hashed asset gzip and cached", func(t *testing.T) {
		r := do(t, c, "GET", p.base+"/assets/app-3f9a1c.js", "", nil, "Accept-Encoding", "gzip")
		if r.Status != http.StatusOK {
			t.Fatalf("status %d", r.Status)
		}
		if ce := r.Header.Get("Content-Encoding"); ce != "gzip" {
			t.Fatalf("Content-Encoding %q, want gzip", ce)
		}
		zr, err := gzip.NewReader(bytes.NewReader(r.Body))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil || string(plain) != appJS {
			t.Fatalf("decompressed body differs from the file (err %v)", err)
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/javascript") {
			t.Errorf("Content-Type %q", ct)
		}
		if v := r.Header.Get("Vary"); !strings.Contains(v, "Accept-Encoding") {
			t.Errorf("Vary %q lacks Accept-Encoding", v)
		}
		if cc := r.Header.Get("Cache-Control"); cc != "max-age=31536000" {
			t.Errorf("Cache-Control %q, want max-age=31536000", cc)
		}
		wantSecurityHeaders(t, r, p.addr)
	})

	t.Run("asset without gzip", func(t *testing.T) {
		r := do(t, c, "GET", p.base+"/assets/app-77e0d2.css", "", nil)
		if r.Status != http.StatusOK || string(r.Body) != "body{margin:0}\n" || r.Header.Get("Content-Encoding") != "" {
			t.Fatalf("%d %q encoding %q", r.Status, r.Body, r.Header.Get("Content-Encoding"))
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/css") {
			t.Errorf("Content-Type %q", ct)
		}
		wantSecurityHeaders(t, r, p.addr)
	})

	t.Run("missing asset is 404 not the app", func(t *testing.T) {
		r := do(t, c, "GET", p.base+"/assets/app-000000.js", "", nil)
		if r.Status != http.StatusNotFound {
			t.Fatalf("status %d, want 404", r.Status)
		}
		if bytes.Contains(r.Body, []byte("id=root")) {
			t.Fatal("a missing asset was answered with index.html")
		}
	})

	t.Run("host with odd characters gets no WebSocket source", func(t *testing.T) {
		r := do(t, c, "GET", p.base+"/", "", nil, "Host", "evil.example;script-src *")
		csp := r.Header.Get("Content-Security-Policy")
		if strings.Contains(csp, "evil") || !strings.Contains(csp, "script-src 'self'") {
			t.Fatalf("Content-Security-Policy %q", csp)
		}
	})
}

func TestErrorsWithoutGateway(t *testing.T) {
	// Nothing listens at the gateway's address.
	p := startProxy(t, "", []string{freeAddr(t), freeAddr(t)}, writeApp(t))
	c := client("")

	t.Run("REST", func(t *testing.T) {
		r := do(t, c, "GET", p.base+"/api/user/me", "", nil)
		wantError(t, r, http.StatusServiceUnavailable, "unavailable")
		wantSecurityHeaders(t, r, p.addr)
		wantError(t, do(t, c, "POST", p.base+"/api/user/login", "", map[string]string{"nickname": "x", "password": "y"}),
			http.StatusServiceUnavailable, "unavailable")
	})

	t.Run("WebSocket handshake", func(t *testing.T) {
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Subprotocols: []string{"rooms.v2"}}
		_, resp, err := d.Dial("ws://"+p.addr+"/api/chat/rooms/1?access_token=x", http.Header{"Origin": {p.base}})
		if err == nil || resp == nil {
			t.Fatalf("dial: err %v, response %v; want a refused handshake", err, resp)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		wantError(t, response{Status: resp.StatusCode, Header: resp.Header, Body: body}, http.StatusServiceUnavailable, "unavailable")
	})

	t.Run("body over 1 MiB", func(t *testing.T) {
		r := do(t, c, "POST", p.base+"/api/user/register", "", bytes.Repeat([]byte("x"), 2<<20))
		wantError(t, r, http.StatusRequestEntityTooLarge, "payload_too_large")
	})

	t.Run("app still served", func(t *testing.T) {
		if r := do(t, c, "GET", p.base+"/", "", nil); r.Status != http.StatusOK {
			t.Fatalf("GET /: %d", r.Status)
		}
	})
}

func TestGatewayTimeout(t *testing.T) {
	// A "gateway" that accepts connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		conns.Wait()
	})
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer conn.Close()
				_, _ = io.Copy(io.Discard, conn) // until nginx gives up and closes
			}()
		}
	}()
	p := startProxy(t, "", []string{l.Addr().String()}, writeApp(t), "PROXY_READ_TIMEOUT=1s")
	r := do(t, client(""), "GET", p.base+"/api/user/me", "", nil)
	wantError(t, r, http.StatusGatewayTimeout, "unavailable")
	wantSecurityHeaders(t, r, p.addr)
}

// login registers and logs in a new user through base and returns its
// access token.
func login(t *testing.T, c *http.Client, base string) (userID, token string) {
	t.Helper()
	nick := "p" + testenv.RandomID(5)
	creds := map[string]string{"nickname": nick, "password": "password-" + nick}
	if r := do(t, c, "POST", base+"/api/user/register", "", creds); r.Status != http.StatusOK {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	r := do(t, c, "POST", base+"/api/user/login", "", creds)
	var out struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &out) != nil || out.AccessToken == "" {
		t.Fatalf("login: %d %s", r.Status, r.Body)
	}
	return out.UserID, out.AccessToken
}

func TestThroughGateways(t *testing.T) {
	proxyAddr := freeAddr(t)
	gateways, procs, keys := startGateways(t, 2,
		"ALLOWED_ORIGINS=http://"+proxyAddr,
		"AUTH_RATE_LIMIT=100", "AUTH_RATE_LIMIT_IP=3")
	p := startProxy(t, proxyAddr, gateways, writeApp(t))
	c := client("")

	userID, token := login(t, c, p.base)
	r := do(t, c, "POST", p.base+"/api/chat/rooms", token, map[string]string{"name": "through the proxy"})
	var room struct{ ID string }
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &room) != nil {
		t.Fatalf("create room: %d %s", r.Status, r.Body)
	}

	t.Run("REST passes through unchanged", func(t *testing.T) {
		r := do(t, c, "GET", p.base+"/api/user/me", token, nil)
		if r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte(`"user_id":"`+userID+`"`)) {
			t.Fatalf("me: %d %s", r.Status, r.Body)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q changed by the proxy", ct)
		}
		// The gateway's own errors are passed on as they are.
		wantError(t, do(t, c, "GET", p.base+"/api/no/such/path", token, nil), http.StatusNotFound, "not_found")
		wantError(t, do(t, c, "GET", p.base+"/api/chat/rooms/999999999", token, nil), http.StatusNotFound, "not_found")
		wantError(t, do(t, c, "POST", p.base+"/api/user/login", "", []byte(`{"nickname":`)), http.StatusBadRequest, "invalid_json")
		// API responses are not compressed (they carry tokens).
		r = do(t, c, "GET", p.base+"/api/chat/rooms", token, nil, "Accept-Encoding", "gzip")
		if r.Status != http.StatusOK || r.Header.Get("Content-Encoding") != "" {
			t.Fatalf("rooms: %d, Content-Encoding %q", r.Status, r.Header.Get("Content-Encoding"))
		}
	})

	t.Run("WebSocket rooms.v2", func(t *testing.T) {
		q := url.Values{"access_token": {"Bearer " + token}}
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Subprotocols: []string{"rooms.v2"}}
		conn, resp, err := d.Dial("ws://"+p.addr+"/api/chat/rooms/"+room.ID+"?"+q.Encode(), http.Header{"Origin": {p.base}})
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Fatalf("dial through the proxy: %v (status %d)", err, status)
		}
		defer conn.Close()
		if conn.Subprotocol() != "rooms.v2" {
			t.Fatalf("subprotocol %q", conn.Subprotocol())
		}
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		var welcome struct {
			Type      string `json:"type"`
			RoomID    string `json:"room_id"`
			UserID    string `json:"user_id"`
			Recovered bool   `json:"recovered"`
		}
		if err := conn.ReadJSON(&welcome); err != nil {
			t.Fatal(err)
		}
		if welcome.Type != "welcome" || welcome.RoomID != room.ID || welcome.UserID != userID || !welcome.Recovered {
			t.Fatalf("first frame %+v, want welcome", welcome)
		}
		// Send a message and wait for its ack (it went to Kafka through the
		// gateway behind the proxy); skip presence frames.
		if err := conn.WriteJSON(map[string]string{"type": "send", "content": "hello via nginx", "client_msg_id": "px-1"}); err != nil {
			t.Fatal(err)
		}
		if err := conn.WriteJSON(map[string]string{"type": "ping"}); err != nil {
			t.Fatal(err)
		}
		var acked, ponged bool
		for !acked || !ponged {
			var f struct {
				Type        string `json:"type"`
				ClientMsgID string `json:"client_msg_id"`
			}
			var data []byte
			if _, data, err = conn.ReadMessage(); err != nil {
				t.Fatalf("read (acked %v, ponged %v): %v", acked, ponged, err)
			}
			_ = json.Unmarshal(data, &f)
			switch f.Type {
			case "ack":
				if f.ClientMsgID != "px-1" {
					t.Fatalf("ack %s, want client_msg_id px-1", data)
				}
				acked = true
			case "pong":
				ponged = true
			case "error":
				t.Fatalf("error frame %s", data)
			}
		}
		// Once the socket is closed, nginx logs it: the path, never the
		// token in the query.
		conn.Close()
		want := []byte(`"path":"/api/chat/rooms/` + room.ID + `","status":101`)
		var logged []byte
		for deadline := time.Now().Add(20 * time.Second); !bytes.Contains(logged, want); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("access log lacks %s:\n%s", want, logged)
			}
			if logged, err = os.ReadFile(filepath.Join(p.runDir, "access.log")); err != nil {
				t.Fatal(err)
			}
		}
		if bytes.Contains(logged, []byte(token)) || bytes.Contains(logged, []byte("access_token")) {
			t.Fatal("the access log holds the WebSocket URL's token")
		}
	})

	t.Run("WebSocket from another origin refused", func(t *testing.T) {
		q := url.Values{"access_token": {"Bearer " + token}}
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
		_, resp, err := d.Dial("ws://"+p.addr+"/api/chat/rooms/"+room.ID+"?"+q.Encode(), http.Header{"Origin": {"http://evil.example"}})
		if err == nil || resp == nil {
			t.Fatalf("dial: %v; want 403", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		wantError(t, response{Status: resp.StatusCode, Header: resp.Header, Body: body}, http.StatusForbidden, "forbidden_origin")
	})

	t.Run("client address from the proxy, not from the client", func(t *testing.T) {
		// Clients on two loopback addresses; the limit is 3 attempts per IP
		// per minute. Whatever a client claims in X-Forwarded-For or
		// X-Real-IP, the gateway counts its real address (set by nginx).
		a, b := client("127.0.0.2"), client("127.0.0.3")
		attempt := func(c *http.Client, spoof string) response {
			return do(t, c, "POST", p.base+"/api/user/login", "",
				map[string]string{"nickname": "nobody" + testenv.RandomID(3), "password": "wrong password"},
				"X-Forwarded-For", spoof, "X-Real-IP", spoof)
		}
		for _, spoof := range []string{"10.9.0.1", "10.9.0.2", "10.9.0.3"} {
			wantError(t, attempt(a, spoof), http.StatusUnauthorized, "unauthorized")
		}
		wantError(t, attempt(a, "10.9.0.4"), http.StatusTooManyRequests, "rate_limited")
		wantError(t, attempt(b, "10.9.0.1"), http.StatusUnauthorized, "unauthorized")

		all := strings.Join(keys("*"), "\n")
		for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
			if !strings.Contains(all, ":ip:"+ip) {
				t.Errorf("no rate-limit key for %s among:\n%s", ip, all)
			}
		}
		if strings.Contains(all, "10.9.0.") {
			t.Errorf("a client-supplied address was trusted:\n%s", all)
		}
		// The gateways log the same client address.
		logs := procs[0].output.String() + procs[1].output.String()
		if !strings.Contains(logs, `"ip":"127.0.0.2"`) || strings.Contains(logs, `"ip":"10.9.0.`) {
			t.Error("gateway logs do not show the address nginx saw")
		}
	})

	t.Run("every gateway serves, and one down is skipped", func(t *testing.T) {
		// Both gateways get requests in turn...
		for i := 0; i < 6; i++ {
			if r := do(t, c, "GET", p.base+"/api/user/me", token, nil); r.Status != http.StatusOK {
				t.Fatalf("me: %d %s", r.Status, r.Body)
			}
		}
		served := 0
		for _, g := range procs {
			if strings.Contains(g.output.String(), `"path":"/api/user/me"`) {
				served++
			}
		}
		if served != 2 {
			t.Errorf("%d of 2 gateways served requests", served)
		}
		// ...and with one killed, every request (POST too) is answered by
		// the other.
		procs[0].stop(syscall.SIGKILL)
		for i := 0; i < 6; i++ {
			if r := do(t, c, "GET", p.base+"/api/user/me", token, nil); r.Status != http.StatusOK {
				t.Fatalf("me with gateway 1 down: %d %s", r.Status, r.Body)
			}
			if r := do(t, c, "POST", p.base+"/api/user/ws-ticket", token, nil); r.Status != http.StatusOK {
				t.Fatalf("ws-ticket with gateway 1 down: %d %s", r.Status, r.Body)
			}
		}
	})
}

// fakeGateway answers every request with status and a JSON body naming it.
func fakeGateway(t *testing.T, name string, status int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status == http.StatusServiceUnavailable {
			fmt.Fprintf(w, `{"code":"unavailable","message":"%s is draining"}`, name)
			return
		}
		fmt.Fprintf(w, `{"served_by":%q}`, name)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestDrainingGatewayRetried(t *testing.T) {
	draining := fakeGateway(t, "draining", http.StatusServiceUnavailable)
	c := client("")

	t.Run("GET goes to another gateway, POST does not", func(t *testing.T) {
		p := startProxy(t, "", []string{draining, fakeGateway(t, "healthy", http.StatusOK)}, writeApp(t))
		// Round robin: one of the first two POSTs reaches the draining
		// gateway; being sent already, it is not sent again elsewhere and
		// the gateway's answer is passed on.
		var refused int
		for i := 0; i < 2; i++ {
			r := do(t, c, "POST", p.base+"/api/chat/rooms", "", map[string]string{"name": "x"})
			switch r.Status {
			case http.StatusOK:
			case http.StatusServiceUnavailable:
				refused++
				if !bytes.Contains(r.Body, []byte("draining is draining")) {
					t.Fatalf("POST answered by the proxy, not the gateway: %s", r.Body)
				}
			default:
				t.Fatalf("POST: %d %s", r.Status, r.Body)
			}
		}
		if refused != 1 {
			t.Errorf("%d of 2 POSTs reached the draining gateway, want 1", refused)
		}
		// GETs (WebSocket handshakes too) always end at the healthy one.
		for i := 0; i < 6; i++ {
			r := do(t, c, "GET", p.base+"/api/chat/rooms", "", nil)
			if r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte("healthy")) {
				t.Fatalf("GET %d: %d %s", i, r.Status, r.Body)
			}
		}
	})

	t.Run("GET retried at once", func(t *testing.T) {
		// A fresh proxy: the first GET may reach the draining gateway first.
		p := startProxy(t, "", []string{draining, fakeGateway(t, "healthy", http.StatusOK)}, writeApp(t))
		for i := 0; i < 2; i++ {
			r := do(t, c, "GET", p.base+"/api/chat/rooms", "", nil)
			if r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte("healthy")) {
				t.Fatalf("GET %d: %d %s", i, r.Status, r.Body)
			}
		}
	})

	t.Run("all draining: the gateway's answer is passed on", func(t *testing.T) {
		p := startProxy(t, "", []string{draining, fakeGateway(t, "draining too", http.StatusServiceUnavailable)}, writeApp(t))
		r := do(t, c, "GET", p.base+"/api/chat/rooms", "", nil)
		wantError(t, r, http.StatusServiceUnavailable, "unavailable")
		if !bytes.Contains(r.Body, []byte("is draining")) {
			t.Fatalf("body %s is not the gateway's", r.Body)
		}
	})
}
