package httpapi_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"rooms/gateway/internal/httpapi"
)

// newServer builds a Server without dependencies, with extra routes.
func newServer(t *testing.T, o httpapi.Options) *httpapi.Server {
	t.Helper()
	s, err := httpapi.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func call(t *testing.T, s *httpapi.Server, req *http.Request) (int, http.Header, string) {
	t.Helper()
	resp, err := s.App().Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(data)
}

func wantCode(t *testing.T, status int, body string, wantStatus int, wantCode string) {
	t.Helper()
	var e map[string]string
	if status != wantStatus || json.Unmarshal([]byte(body), &e) != nil || e["code"] != wantCode || e["message"] == "" || len(e) != 2 {
		t.Fatalf("got %d %s, want %d %s", status, body, wantStatus, wantCode)
	}
}

func TestPanicIsInternalError(t *testing.T) {
	s := newServer(t, httpapi.Options{Routes: func(api fiber.Router) {
		api.Get("/boom", func(*fiber.Ctx) error { panic("secret internal detail") })
		api.Get("/fail", func(*fiber.Ctx) error { return errors.New("secret internal detail") })
	}})
	for _, path := range []string{"/api/boom", "/api/fail"} {
		status, _, body := call(t, s, httptest.NewRequest("GET", path, nil))
		wantCode(t, status, body, 500, "internal_error")
		if strings.Contains(body, "secret") {
			t.Fatalf("500 leaks internals: %s", body)
		}
	}
}

func TestErrorKinds(t *testing.T) {
	s := newServer(t, httpapi.Options{Routes: func(api fiber.Router) {
		api.Get("/limited", func(*fiber.Ctx) error {
			return &httpapi.Error{Kind: httpapi.KindRateLimited, Message: "slow down", RetryAfter: 7}
		})
	}})
	status, hdr, body := call(t, s, httptest.NewRequest("GET", "/api/limited", nil))
	wantCode(t, status, body, 429, "rate_limited")
	if hdr.Get("Retry-After") != "7" {
		t.Fatalf("Retry-After = %q", hdr.Get("Retry-After"))
	}
	status, _, body = call(t, s, httptest.NewRequest("GET", "/api/unknown", nil))
	wantCode(t, status, body, 404, "not_found")
	status, _, body = call(t, s, httptest.NewRequest("DELETE", "/api/user/login", nil))
	wantCode(t, status, body, 405, "method_not_allowed")
}

// TestDependencyErrorsAreUnavailable: an error that means PostgreSQL or
// Redis did not answer is 503 unavailable with Retry-After, never a 500,
// and its text is not answered.
func TestDependencyErrorsAreUnavailable(t *testing.T) {
	errs := map[string]error{
		"refused":  fmt.Errorf("secret: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}),
		"shutdown": fmt.Errorf("secret: %w", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}),
		"eof":      fmt.Errorf("secret: %w", io.ErrUnexpectedEOF),
		"pool":     fmt.Errorf("secret: %w", redis.ErrPoolTimeout),
	}
	s := newServer(t, httpapi.Options{Routes: func(api fiber.Router) {
		api.Get("/dep/:kind", func(c *fiber.Ctx) error { return errs[c.Params("kind")] })
	}})
	for kind := range errs {
		status, hdr, body := call(t, s, httptest.NewRequest("GET", "/api/dep/"+kind, nil))
		wantCode(t, status, body, 503, "unavailable")
		if hdr.Get("Retry-After") == "" || strings.Contains(body, "secret") {
			t.Fatalf("%s: Retry-After %q, body %s", kind, hdr.Get("Retry-After"), body)
		}
	}
}

// TestRequestDeadline: a handler's context ends RequestTimeout after the
// request began, so a query waiting on a database that stopped answering
// gives up and the request is answered 503 unavailable. Without the
// deadline the handler here would wait its full minute and answer 200.
func TestRequestDeadline(t *testing.T) {
	s := newServer(t, httpapi.Options{RequestTimeout: 100 * time.Millisecond, Routes: func(api fiber.Router) {
		api.Get("/wait", func(c *fiber.Ctx) error {
			select {
			case <-c.UserContext().Done():
				return fmt.Errorf("query: %w", c.UserContext().Err())
			case <-time.After(time.Minute):
				return c.SendString("no deadline")
			}
		})
	}})
	status, _, body := call(t, s, httptest.NewRequest("GET", "/api/wait", nil))
	wantCode(t, status, body, 503, "unavailable")
}

func TestDrainingNotReady(t *testing.T) {
	s := newServer(t, httpapi.Options{})
	s.SetDraining(true)
	status, _, body := call(t, s, httptest.NewRequest("GET", "/readyz", nil))
	wantCode(t, status, body, 503, "unavailable")
	if status, _, _ := call(t, s, httptest.NewRequest("GET", "/healthz", nil)); status != 200 {
		t.Fatalf("healthz while draining = %d", status)
	}
}

func TestRoomUpgradeComposes(t *testing.T) {
	s := newServer(t, httpapi.Options{RoomUpgrade: func(c *fiber.Ctx) error {
		return c.SendString("upgrade " + c.Params("id"))
	}})
	req := httptest.NewRequest("GET", "/api/chat/rooms/7", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	if status, _, body := call(t, s, req); status != 200 || body != "upgrade 7" {
		t.Fatalf("upgrade: %d %s", status, body)
	}
	// A plain GET still goes to the REST handler (which wants a token).
	status, _, body := call(t, s, httptest.NewRequest("GET", "/api/chat/rooms/7", nil))
	wantCode(t, status, body, 401, "unauthorized")
}

func TestClientIP(t *testing.T) {
	// fiber's test connections come from 0.0.0.0.
	tests := []struct {
		name    string
		trusted []string
		headers map[string]string
		want    string
	}{
		{"untrusted ignores headers", []string{"127.0.0.1"}, map[string]string{"X-Real-IP": "1.2.3.4", "X-Forwarded-For": "5.6.7.8"}, "0.0.0.0"},
		{"trusted X-Real-IP", []string{"0.0.0.0"}, map[string]string{"X-Real-IP": "1.2.3.4", "X-Forwarded-For": "5.6.7.8"}, "1.2.3.4"},
		{"trusted XFF rightmost untrusted", []string{"0.0.0.0/32", "10.0.0.0/8"}, map[string]string{"X-Forwarded-For": "6.6.6.6, 5.6.7.8, 10.1.1.1"}, "5.6.7.8"},
		{"trusted invalid headers", []string{"0.0.0.0"}, map[string]string{"X-Real-IP": "nope", "X-Forwarded-For": "bad"}, "0.0.0.0"},
		{"trusted no headers", []string{"0.0.0.0"}, nil, "0.0.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s *httpapi.Server
			s = newServer(t, httpapi.Options{TrustedProxies: tt.trusted, Routes: func(api fiber.Router) {
				api.Get("/ip", func(c *fiber.Ctx) error { return c.SendString(s.ClientIP(c)) })
			}})
			req := httptest.NewRequest("GET", "/api/ip", nil)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			if _, _, got := call(t, s, req); got != tt.want {
				t.Fatalf("ClientIP = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := httpapi.New(httpapi.Options{TrustedProxies: []string{"not-an-ip"}}); err == nil {
		t.Fatal("bad trusted proxy accepted")
	}
}
