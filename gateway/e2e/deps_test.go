package e2e_test

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rooms/shared/testenv"
)

// TestDependenciesDown runs a gateway on a PostgreSQL server and a Redis
// server of its own and takes each away: stopped (connections refused)
// and, for PostgreSQL, frozen (connections open, nothing answers, as with
// a server cut off without a reset). Every request that needs the missing
// server is answered 503 unavailable with Retry-After: never a 500, and
// never a request left hanging (the client gives up after 30 s; the
// gateway's HTTP_REQUEST_TIMEOUT is 1 s here). Requests that need neither
// keep working, and everything works again once the server is back.
func TestDependenciesDown(t *testing.T) {
	pg := testenv.StartPGServer(t)
	db := pg.Database()
	rs := testenv.StartRedisServer(t, t.TempDir())
	redisAddr := rs.Addr
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { rdb.Close() })
	g := startOn(t, db, redisAddr, rdb, "e2e:", "HTTP_REQUEST_TIMEOUT=1s")

	tok := g.user("dora").AccessToken
	var room struct {
		ID string `json:"id"`
	}
	wantJSON(t, g.do("POST", "/api/chat/rooms", tok, map[string]string{"name": "down"}), &room)
	needPG := []struct{ method, path string }{
		{"GET", "/api/chat/rooms"},
		{"GET", "/api/chat/rooms/" + room.ID},
		{"GET", "/api/chat/rooms/" + room.ID + "/messages"},
		{"POST", "/api/chat/rooms"},
		{"POST", "/api/user/login"},
		{"POST", "/api/user/register"},
	}
	body := func(method, path string) any {
		switch path {
		case "/api/chat/rooms":
			if method == "POST" {
				return map[string]string{"name": "while-down"}
			}
		case "/api/user/login":
			return map[string]string{"nickname": "dora", "password": "password-dora"}
		case "/api/user/register":
			return map[string]string{"nickname": "eve" + testenv.RandomID(4), "password": "password-eve"}
		}
		return nil
	}
	unavailable := func(what string) {
		t.Helper()
		for _, r := range needPG {
			resp := g.do(r.method, r.path, tok, body(r.method, r.path))
			t.Logf("%s: %s %s -> %d %s", what, r.method, r.path, resp.Status, resp.Body)
			wantError(t, resp, http.StatusServiceUnavailable, "unavailable")
			if resp.Header.Get("Retry-After") == "" {
				t.Fatalf("%s: %s %s: no Retry-After", what, r.method, r.path)
			}
		}
		if r := g.do("GET", "/readyz", "", nil); r.Status != http.StatusServiceUnavailable {
			t.Fatalf("%s: /readyz = %d, want 503", what, r.Status)
		}
		// The access token is checked without the database.
		if r := g.do("GET", "/api/user/me", tok, nil); r.Status != http.StatusOK {
			t.Fatalf("%s: /api/user/me = %d %s, want 200", what, r.Status, r.Body)
		}
	}
	servesAgain := func(what string) {
		t.Helper()
		testenv.WaitFor(t, what, time.Minute, nil, func() bool {
			return g.do("GET", "/api/chat/rooms", tok, nil).Status == http.StatusOK
		})
		wantJSON(t, g.do("GET", "/api/chat/rooms/"+room.ID+"/messages", tok, nil), new([]any))
	}

	pg.Stop()
	unavailable("PostgreSQL stopped")
	pg.Start()
	servesAgain("rooms listed again after PostgreSQL restarted")

	thaw := pg.Freeze(t)
	unavailable("PostgreSQL frozen")
	thaw()
	servesAgain("rooms listed again after PostgreSQL was thawed")

	// A WebSocket handshake with a one-time ticket needs Redis to redeem
	// it: a bad ticket is 401, a good one while Redis is down 503 (the
	// client's credentials may be fine).
	var ticket struct {
		Ticket string `json:"ticket"`
	}
	wantJSON(t, g.do("POST", "/api/user/ws-ticket", tok, nil), &ticket)
	upgrade := []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}
	wantError(t, g.do("GET", "/api/chat/rooms/"+room.ID+"?ticket=not-a-ticket", "", nil, upgrade...), http.StatusUnauthorized, "unauthorized")

	if err := rs.Stop(t, syscall.SIGKILL); err != nil {
		t.Logf("redis stop: %v", err)
	}
	resp := g.do("GET", "/api/chat/rooms/"+room.ID+"?ticket="+ticket.Ticket, "", nil, upgrade...)
	wantError(t, resp, http.StatusServiceUnavailable, "unavailable")
	resp = g.do("GET", "/api/chat/rooms/"+room.ID+"/clients", tok, nil)
	wantError(t, resp, http.StatusServiceUnavailable, "unavailable")
	// Login and register are rate limited through Redis.
	resp = g.do("POST", "/api/user/login", "", body("POST", "/api/user/login"))
	wantError(t, resp, http.StatusServiceUnavailable, "unavailable")
	wantJSON(t, g.do("GET", "/api/chat/rooms", tok, nil), new([]any))
	rs.Start(t)
	testenv.WaitFor(t, "room clients listed again after Redis restarted", time.Minute, nil, func() bool {
		return g.do("GET", "/api/chat/rooms/"+room.ID+"/clients", tok, nil).Status == http.StatusOK
	})
	g.login("dora", "password-dora")
}
