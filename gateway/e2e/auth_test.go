package e2e_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestHealth(t *testing.T) {
	g := start(t)
	for _, path := range []string{"/healthz", "/readyz", "/api/healthz", "/api/readyz"} {
		if r := g.do("GET", path, "", nil); r.Status != http.StatusOK {
			t.Errorf("GET %s = %d %s", path, r.Status, r.Body)
		}
	}
	wantError(t, g.do("GET", "/api/nope", "", nil), http.StatusNotFound, "not_found")
	wantError(t, g.do("GET", "/nope", "", nil), http.StatusNotFound, "not_found")
}

func TestRegister(t *testing.T) {
	g := start(t)
	r := g.do("POST", "/api/user/register", "", map[string]string{"nickname": "Alice", "password": "password1"})
	if r.Status != http.StatusOK {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	m := wantKeys(t, r.Body, "user_id", "nickname")
	if m["user_id"] != "1" || m["nickname"] != "Alice" {
		t.Fatalf("register body %s", r.Body)
	}
	wantError(t, g.do("POST", "/api/user/register", "", map[string]string{"nickname": "aLICE", "password": "password2"}),
		http.StatusConflict, "nickname_taken")
	// Unicode letters and digits, '_', '-', '.' are allowed; content type is optional.
	r = g.do("POST", "/api/user/register", "", `{"nickname":"Zoë_1-x.y","password":"pässwörd","extra":true}`, "Content-Type", "")
	if r.Status != http.StatusOK {
		t.Fatalf("unicode register: %d %s", r.Status, r.Body)
	}

	tests := []struct {
		name, body, code, field string
	}{
		{"malformed", `{"nickname":`, "invalid_json", ""},
		{"not json", `nickname=bob`, "invalid_json", ""},
		{"empty body", ``, "invalid_json", ""},
		{"trailing data", `{"nickname":"bob","password":"password1"} x`, "invalid_json", ""},
		{"array", `[1,2]`, "validation_failed", "JSON object"},
		{"null", ` null `, "validation_failed", "JSON object"},
		{"number", `5`, "validation_failed", "JSON object"},
		{"missing nickname", `{"password":"password1"}`, "validation_failed", "nickname"},
		{"missing password", `{"nickname":"bobby"}`, "validation_failed", "password"},
		{"nickname wrong type", `{"nickname":5,"password":"password1"}`, "validation_failed", "nickname"},
		{"password wrong type", `{"nickname":"bobby","password":["x"]}`, "validation_failed", "password"},
		{"nickname too short", `{"nickname":"bo","password":"password1"}`, "validation_failed", "nickname"},
		{"nickname too long", `{"nickname":"` + strings.Repeat("b", 51) + `","password":"password1"}`, "validation_failed", "nickname"},
		{"nickname space", `{"nickname":"bob by","password":"password1"}`, "validation_failed", "nickname"},
		{"nickname symbol", `{"nickname":"bob!","password":"password1"}`, "validation_failed", "nickname"},
		{"password too short", `{"nickname":"bobby","password":"1234567"}`, "validation_failed", "password"},
		{"password too long", `{"nickname":"bobby","password":"` + strings.Repeat("p", 129) + `"}`, "validation_failed", "password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := g.do("POST", "/api/user/register", "", tt.body)
			wantError(t, r, http.StatusBadRequest, tt.code)
			if tt.field != "" && !strings.Contains(string(r.Body), tt.field) {
				t.Errorf("message of %s does not name %q", r.Body, tt.field)
			}
		})
	}
	// Boundaries that are accepted.
	g.register(strings.Repeat("n", 50), strings.Repeat("p", 128))
	g.register("abc", "12345678")
}

func TestLogin(t *testing.T) {
	g := start(t)
	id := g.register("Carol", "correct horse")
	r := g.do("POST", "/api/user/login", "", map[string]string{"nickname": "carol", "password": "correct horse"})
	if r.Status != http.StatusOK {
		t.Fatalf("login: %d %s", r.Status, r.Body)
	}
	m := wantKeys(t, r.Body, "user_id", "nickname", "access_token", "refresh_token", "expires_in")
	if m["user_id"] != id || m["nickname"] != "Carol" || m["expires_in"] != float64(900) {
		t.Fatalf("login body %s", r.Body)
	}
	if rt := m["refresh_token"].(string); len(rt) < 43 {
		t.Fatalf("refresh token %q is shorter than 256 bits", rt)
	}

	wrong := g.do("POST", "/api/user/login", "", map[string]string{"nickname": "Carol", "password": "wrong password"})
	unknown := g.do("POST", "/api/user/login", "", map[string]string{"nickname": "nobody", "password": "wrong password"})
	wantError(t, wrong, http.StatusUnauthorized, "unauthorized")
	wantError(t, unknown, http.StatusUnauthorized, "unauthorized")
	if string(wrong.Body) != string(unknown.Body) {
		t.Fatalf("wrong password %s and unknown user %s differ", wrong.Body, unknown.Body)
	}
	wantError(t, g.do("POST", "/api/user/login", "", `{"nickname":"Carol"`), http.StatusBadRequest, "invalid_json")
	wantError(t, g.do("POST", "/api/user/login", "", `{"nickname":"Carol"}`), http.StatusBadRequest, "validation_failed")
	wantError(t, g.do("POST", "/api/user/login", "", `{"password":"x"}`), http.StatusBadRequest, "validation_failed")
	wantError(t, g.do("POST", "/api/user/login", "", `{"nickname":"Carol","password":1}`), http.StatusBadRequest, "validation_failed")
}

// forge signs claims with key using method.
func forge(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAccessTokens(t *testing.T) {
	g := start(t)
	s := g.user("dave")
	r := g.do("GET", "/api/user/me", s.AccessToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("me: %d %s", r.Status, r.Body)
	}
	m := wantKeys(t, r.Body, "user_id", "nickname")
	if m["user_id"] != s.UserID || m["nickname"] != "dave" {
		t.Fatalf("me body %s", r.Body)
	}
	// The access token carries the documented claims.
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(s.AccessToken, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "nickname", "exp", "iat", "typ", "fam"} {
		if _, ok := claims[k]; !ok {
			t.Errorf("access token lacks claim %q: %s", k, payload)
		}
	}
	if claims["id"] != s.UserID || claims["typ"] != "access" {
		t.Errorf("claims %s", payload)
	}

	now := time.Now()
	valid := jwt.MapClaims{"id": s.UserID, "nickname": "dave", "typ": "access", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range valid {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	if r := g.do("GET", "/api/user/me", forge(t, jwt.SigningMethodHS256, []byte(testSecret), valid), nil); r.Status != http.StatusOK {
		t.Fatalf("forged valid token refused: %d %s", r.Status, r.Body)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, valid).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(s.AccessToken, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"id":"999","nickname":"dave","typ":"access","exp":`+strconv.FormatInt(now.Add(time.Hour).Unix(), 10)+`}`)) + "." + parts[2]

	bad := map[string]string{
		"garbage":         "not-a-jwt",
		"alg none":        none,
		"wrong key":       forge(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-another"), valid),
		"HS512":           forge(t, jwt.SigningMethodHS512, []byte(testSecret), valid),
		"tampered":        tampered,
		"expired":         forge(t, jwt.SigningMethodHS256, []byte(testSecret), with("exp", now.Add(-time.Minute).Unix())),
		"no exp":          forge(t, jwt.SigningMethodHS256, []byte(testSecret), with("exp", nil)),
		"typ refresh":     forge(t, jwt.SigningMethodHS256, []byte(testSecret), with("typ", "refresh")),
		"no typ":          forge(t, jwt.SigningMethodHS256, []byte(testSecret), with("typ", nil)),
		"bad id":          forge(t, jwt.SigningMethodHS256, []byte(testSecret), with("id", "abc")),
		"refresh token":   s.RefreshToken,
		"huge":            strings.Repeat("a", 8000),
		"signature strip": parts[0] + "." + parts[1] + ".",
	}
	for name, tok := range bad {
		t.Run(name, func(t *testing.T) {
			wantError(t, g.do("GET", "/api/user/me", tok, nil), http.StatusUnauthorized, "unauthorized")
		})
	}
	wantError(t, g.do("GET", "/api/user/me", "", nil), http.StatusUnauthorized, "unauthorized")
	wantError(t, g.do("GET", "/api/user/me", "", nil, "Authorization", "Basic "+s.AccessToken), http.StatusUnauthorized, "unauthorized")
	wantError(t, g.do("GET", "/api/chat/rooms", "", nil), http.StatusUnauthorized, "unauthorized")
	wantError(t, g.do("POST", "/api/user/ws-ticket", "", nil), http.StatusUnauthorized, "unauthorized")
}

func TestRefreshRotation(t *testing.T) {
	g := start(t)
	s0 := g.user("erin")
	fam := familyOf(t, s0.AccessToken)

	refresh := func(tok string) response {
		return g.do("POST", "/api/user/refresh", "", map[string]string{"refresh_token": tok})
	}
	var s1, s2, s3 session
	r := refresh(s0.RefreshToken)
	wantJSON(t, r, &s1)
	wantKeys(t, r.Body, "user_id", "nickname", "access_token", "refresh_token", "expires_in")
	if s1.RefreshToken == s0.RefreshToken || s1.UserID != s0.UserID || s1.Nickname != "erin" || s1.ExpiresIn != 900 {
		t.Fatalf("refresh answer %s", r.Body)
	}
	if familyOf(t, s1.AccessToken) != fam {
		t.Fatalf("rotation changed the family")
	}
	// Grace: the old token again, while its successor is unused, gets a
	// fresh pair (and supersedes the earlier successor).
	wantJSON(t, refresh(s0.RefreshToken), &s2)
	if s2.RefreshToken == s1.RefreshToken {
		t.Fatal("grace refresh returned the same token")
	}
	wantError(t, refresh(s1.RefreshToken), http.StatusUnauthorized, "unauthorized")
	wantJSON(t, refresh(s2.RefreshToken), &s3)

	// Reuse: s0 again after its successor s2 was used revokes the family,
	// publishes it, and the newest token stops working too.
	sub := g.rdb.Subscribe(context.Background(), g.prefix+"revoked")
	defer sub.Close()
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantError(t, refresh(s0.RefreshToken), http.StatusUnauthorized, "unauthorized")
	select {
	case msg := <-sub.Channel():
		if msg.Payload != fam {
			t.Fatalf("published %q, want family %q", msg.Payload, fam)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no revocation published")
	}
	wantError(t, refresh(s3.RefreshToken), http.StatusUnauthorized, "unauthorized")
	wantError(t, refresh(s2.RefreshToken), http.StatusUnauthorized, "unauthorized")
	// Access tokens already issued stay valid until they expire.
	if r := g.do("GET", "/api/user/me", s3.AccessToken, nil); r.Status != http.StatusOK {
		t.Fatalf("access token after revocation: %d %s", r.Status, r.Body)
	}
	// Another login is a separate family and unaffected.
	s4 := g.login("erin", "password-erin")
	wantJSON(t, refresh(s4.RefreshToken), &session{})

	wantError(t, refresh("unknown-token"), http.StatusUnauthorized, "unauthorized")
	wantError(t, refresh(s0.AccessToken), http.StatusUnauthorized, "unauthorized")
	wantError(t, g.do("POST", "/api/user/refresh", "", `{}`), http.StatusBadRequest, "validation_failed")
	wantError(t, g.do("POST", "/api/user/refresh", "", `{"refresh_token":5}`), http.StatusBadRequest, "validation_failed")
	wantError(t, g.do("POST", "/api/user/refresh", "", `{"refresh_token"`), http.StatusBadRequest, "invalid_json")

	// Stored only as hashes: no row holds the token itself.
	var n int
	if err := g.db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM refresh_tokens WHERE token_hash = convert_to($1, 'UTF8')`, s4.RefreshToken).Scan(&n); err != nil || n != 0 {
		t.Fatalf("plain token stored: n=%d err=%v", n, err)
	}
}

// familyOf returns the "fam" claim of an access token.
func familyOf(t *testing.T, token string) string {
	t.Helper()
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Fam string `json:"fam"`
	}
	if err := json.Unmarshal(payload, &c); err != nil || c.Fam == "" {
		t.Fatalf("no fam claim in %s", payload)
	}
	return c.Fam
}

func TestLogout(t *testing.T) {
	g := start(t)
	s := g.user("frank")
	other := g.login("frank", "password-frank")
	logout := func(body any) response { return g.do("POST", "/api/user/logout", "", body) }

	r := logout(map[string]string{"refresh_token": s.RefreshToken})
	if r.Status != http.StatusNoContent || len(r.Body) != 0 {
		t.Fatalf("logout: %d %q", r.Status, r.Body)
	}
	wantError(t, g.do("POST", "/api/user/refresh", "", map[string]string{"refresh_token": s.RefreshToken}),
		http.StatusUnauthorized, "unauthorized")
	// Again, and an unknown token: still 204.
	for _, tok := range []string{s.RefreshToken, "never-issued"} {
		if r := logout(map[string]string{"refresh_token": tok}); r.Status != http.StatusNoContent {
			t.Fatalf("logout %q: %d %s", tok, r.Status, r.Body)
		}
	}
	// The other login is untouched.
	wantJSON(t, g.do("POST", "/api/user/refresh", "", map[string]string{"refresh_token": other.RefreshToken}), &session{})
	wantError(t, logout(`{"refresh_token":`), http.StatusBadRequest, "invalid_json")
	wantError(t, logout(`{}`), http.StatusBadRequest, "validation_failed")
}

func TestWSTicket(t *testing.T) {
	g := start(t)
	s := g.user("grace")
	r := g.do("POST", "/api/user/ws-ticket", s.AccessToken, nil)
	m := wantKeys(t, r.Body, "ticket", "expires_in")
	if r.Status != http.StatusOK || m["expires_in"] != float64(30) {
		t.Fatalf("ws-ticket: %d %s", r.Status, r.Body)
	}
	ticket := m["ticket"].(string)
	ttl, err := g.rdb.TTL(context.Background(), g.prefix+"ticket:"+ticket).Result()
	if err != nil || ttl <= 0 || ttl > 30*time.Second {
		t.Fatalf("ticket key TTL = %v, %v", ttl, err)
	}
	var stored struct {
		UserID   int64  `json:"user_id"`
		Nickname string `json:"nickname"`
	}
	data, err := g.rdb.Get(context.Background(), g.prefix+"ticket:"+ticket).Bytes()
	if err != nil || json.Unmarshal(data, &stored) != nil || strconv.FormatInt(stored.UserID, 10) != s.UserID || stored.Nickname != "grace" {
		t.Fatalf("stored ticket %s, %v", data, err)
	}
}

func TestBodyLimit(t *testing.T) {
	g := start(t)
	big := `{"nickname":"hugo","password":"` + strings.Repeat("x", 70<<10) + `"}`
	wantError(t, g.do("POST", "/api/user/register", "", big), http.StatusRequestEntityTooLarge, "payload_too_large")
	// The server keeps serving.
	if r := g.do("GET", "/healthz", "", nil); r.Status != http.StatusOK {
		t.Fatalf("healthz after 413: %d", r.Status)
	}
	// A body announced far over the limit is refused before it is read:
	// over a raw socket, the answer is still our 413 JSON.
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(conn, "POST /api/user/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", 8<<20); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, response{Status: resp.StatusCode, Header: resp.Header, Body: data}, http.StatusRequestEntityTooLarge, "payload_too_large")

	// Just under the limit is decoded (and fails validation, not size).
	ok := `{"nickname":"hugo","password":"x","pad":"` + strings.Repeat("x", 60<<10) + `"}`
	wantError(t, g.do("POST", "/api/user/register", "", ok), http.StatusBadRequest, "validation_failed")
}

func TestRateLimit(t *testing.T) {
	g := start(t, "AUTH_RATE_LIMIT=2", "AUTH_RATE_LIMIT_IP=3")
	login := func(nick, ip string) response {
		return g.do("POST", "/api/user/login", "", map[string]string{"nickname": nick, "password": "wrong password"}, "X-Real-IP", ip)
	}
	wantError(t, login("ivan", "10.0.0.1"), http.StatusUnauthorized, "unauthorized")
	wantError(t, login("IVAN", "10.0.0.1"), http.StatusUnauthorized, "unauthorized")
	// Third attempt on the nickname (case-insensitively): limited.
	r := login("Ivan", "10.0.0.1")
	wantError(t, r, http.StatusTooManyRequests, "rate_limited")
	if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs < 1 {
		t.Fatalf("Retry-After = %q", r.Header.Get("Retry-After"))
	}
	// The IP has now used its 3 attempts: another nickname from it is limited...
	wantError(t, login("judy", "10.0.0.1"), http.StatusTooManyRequests, "rate_limited")
	// ...but from another IP (X-Real-IP is trusted from 127.0.0.1) it is not.
	wantError(t, login("judy", "10.0.0.2"), http.StatusUnauthorized, "unauthorized")
	// The limited nickname stays limited from any IP.
	wantError(t, login("ivan", "10.0.0.3"), http.StatusTooManyRequests, "rate_limited")

	// Register has its own budget.
	reg := func(nick, ip string) response {
		return g.do("POST", "/api/user/register", "", map[string]string{"nickname": nick, "password": "password1"}, "X-Real-IP", ip)
	}
	if r := reg("kate", "10.0.1.1"); r.Status != http.StatusOK {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	wantError(t, reg("kate", "10.0.1.1"), http.StatusConflict, "nickname_taken")
	wantError(t, reg("kate", "10.0.1.1"), http.StatusTooManyRequests, "rate_limited")

	// Every rate-limit key lives under the prefix.
	keys, err := g.rdb.Keys(context.Background(), "rate:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(k, g.prefix) {
			t.Fatalf("rate-limit key %q outside the prefix", k)
		}
	}
	if n, _ := g.rdb.Keys(context.Background(), g.prefix+"rl:*").Result(); len(n) == 0 {
		t.Fatal("no rate-limit keys under the prefix")
	}
}
