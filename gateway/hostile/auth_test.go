package hostile_test

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func forge(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// badTokens is the JWT matrix: every way an access token can be wrong.
// The REST side of the same matrix is gateway/e2e TestAccessTokens.
func badTokens(t *testing.T, sess session) map[string]string {
	now := time.Now()
	valid := jwt.MapClaims{"id": sess.UserID, "nickname": sess.Nickname, "typ": "access",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
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
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, valid).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(sess.AccessToken, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"id":"999","nickname":"x","typ":"access","exp":`+
		strconv.FormatInt(now.Add(time.Hour).Unix(), 10)+`}`)) + "." + parts[2]
	return map[string]string{
		"garbage":         "not-a-jwt",
		"alg none":        none,
		"wrong key":       forge(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-another-secret"), valid),
		"HS512 same key":  forge(t, jwt.SigningMethodHS512, []byte(testSecret), valid),
		"tampered":        tampered,
		"signature strip": parts[0] + "." + parts[1] + ".",
		"expired":         forge(t, jwt.SigningMethodHS256, []byte(testSecret), with("exp", now.Add(-time.Minute).Unix())),
		"no exp":          forge(t, jwt.SigningMethodHS256, []byte(testSecret), with("exp", nil)),
		"typ refresh":     forge(t, jwt.SigningMethodHS256, []byte(testSecret), with("typ", "refresh")),
		"refresh token":   sess.RefreshToken,
		"huge":            strings.Repeat("a", 8000),
	}
}

// TestHandshakeRefusesBadTokens runs the JWT matrix against the WebSocket
// handshake, with the token in the Authorization header and in the
// access_token query parameter, and checks the Origin rule.
func TestHandshakeRefusesBadTokens(t *testing.T) {
	s := start(t, opts{})
	sess := s.user("mallory")
	room := s.room(sess.AccessToken, "general")

	for name, tok := range badTokens(t, sess) {
		t.Run(name, func(t *testing.T) {
			_, r, err := s.dialWS(room, tok, true, nil, nil)
			if err == nil {
				t.Fatal("header token accepted")
			}
			wantError(t, r.Status, r.Header, r.Body, http.StatusUnauthorized, "unauthorized")
			_, r, err = s.dialWS(room, "", true, url.Values{"access_token": {"Bearer " + tok}}, nil)
			if err == nil {
				t.Fatal("query token accepted")
			}
			wantError(t, r.Status, r.Header, r.Body, http.StatusUnauthorized, "unauthorized")
		})
	}

	// A token larger than the header buffer (16 KiB) is refused before it
	// is read: 431, or, when the client is still writing as the server
	// answers and closes, a connection cut without a handshake.
	_, r, err := s.dialWS(room, strings.Repeat("a", 20<<10), true, nil, nil)
	if err == nil || (r.Status != http.StatusRequestHeaderFieldsTooLarge && r.Status != 0) {
		t.Fatalf("20 KiB token: %v, status %d %s", err, r.Status, r.Body)
	}

	// Cross-origin handshakes are refused, even with a valid token; the
	// configured origin and a client without Origin are accepted.
	for _, origin := range []string{"http://evil.example", "null", "http://app.example.evil.example", "https://app.example"} {
		_, r, err := s.dialWS(room, sess.AccessToken, true, nil, http.Header{"Origin": {origin}})
		if err == nil {
			t.Fatalf("origin %q accepted", origin)
		}
		wantError(t, r.Status, r.Header, r.Body, http.StatusForbidden, "forbidden_origin")
	}
	c, r, err := s.dialWS(room, sess.AccessToken, true, nil, http.Header{"Origin": {allowedOrigin}})
	if err != nil {
		t.Fatalf("allowed origin refused: %v %d %s", err, r.Status, r.Body)
	}
	if f := c.next(); f.Type != "welcome" {
		t.Fatalf("first frame %+v", f)
	}
	s.mustWS(room, sess.AccessToken, false).read()
}

// TestRevokedLoginsLoseTheirSockets checks that refresh-token reuse and
// logout close exactly the sockets of that login with 4001, and that the
// process keeps serving the others.
func TestRevokedLoginsLoseTheirSockets(t *testing.T) {
	s := start(t, opts{})
	first := s.user("victim")
	second := s.login("victim")
	room := s.room(first.AccessToken, "general")

	v2 := s.mustWS(room, first.AccessToken, true)
	v2.next()
	legacy := s.mustWS(room, first.AccessToken, false)
	legacy.read()
	other := s.mustWS(room, second.AccessToken, true)
	other.next()

	refresh := func(tok string) response {
		return s.do("POST", "/api/user/refresh", "", map[string]string{"refresh_token": tok})
	}
	// r0 → r1, r1 → r2: r0's successor is used, so r0 again is reuse (a
	// stolen token replayed).
	var p1, p2 session
	if r := refresh(first.RefreshToken); r.Status != 200 || jsonInto(r.Body, &p1) != nil {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	if r := refresh(p1.RefreshToken); r.Status != 200 || jsonInto(r.Body, &p2) != nil {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	r := refresh(first.RefreshToken)
	wantError(t, r.Status, r.Header, r.Body, http.StatusUnauthorized, "unauthorized")
	for name, c := range map[string]*wsConn{"v2": v2, "legacy": legacy} {
		if code := c.closeCode(); code != 4001 {
			t.Fatalf("%s socket of the reused login: close code %d, want 4001", name, code)
		}
	}
	r = refresh(p2.RefreshToken)
	wantError(t, r.Status, r.Header, r.Body, http.StatusUnauthorized, "unauthorized")

	// The other login's socket is untouched...
	other.write([]byte(`{"type":"ping"}`))
	if f := other.next(); f.Type != "pong" {
		t.Fatalf("other login: %+v", f)
	}
	// ...until that login logs out.
	if r := s.do("POST", "/api/user/logout", "", map[string]string{"refresh_token": second.RefreshToken}); r.Status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.Status, r.Body)
	}
	if code := other.closeCode(); code != 4001 {
		t.Fatalf("socket after logout: close code %d, want 4001", code)
	}
}
