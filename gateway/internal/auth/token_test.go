package auth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"rooms/gateway/internal/auth"
)

const secret = "unit-test-secret-unit-test-secret-0123"

func newAuth(t *testing.T, now func() time.Time) *auth.Auth {
	t.Helper()
	a, err := auth.New(context.Background(), auth.Options{
		Secret: []byte(secret), AccessTTL: 15 * time.Minute, RefreshTTL: time.Hour, TicketTTL: 30 * time.Second,
		HashConcurrency: 1, Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestNewRefusesShortSecret(t *testing.T) {
	_, err := auth.New(context.Background(), auth.Options{
		Secret: []byte(strings.Repeat("s", 31)), AccessTTL: time.Minute, RefreshTTL: time.Hour, TicketTTL: time.Second,
	})
	if err == nil {
		t.Fatal("31-byte secret accepted")
	}
}

func TestParseAccess(t *testing.T) {
	now := time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC)
	a := newAuth(t, func() time.Time { return now })
	tok, err := a.SignAccess(auth.Claims{UserID: 7, Nickname: "bob", FamilyID: "fam-1", ExpiresAt: now.Add(15 * time.Minute)}, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.ParseAccess(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != 7 || c.Nickname != "bob" || c.FamilyID != "fam-1" || !c.ExpiresAt.Equal(now.Add(15*time.Minute)) {
		t.Fatalf("claims %+v", c)
	}

	sign := func(m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"id": "7", "nickname": "bob", "typ": "access", "fam": "f", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := base()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, base()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	parts := strings.Split(tok, ".")
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid forged", sign(jwt.SigningMethodHS256, []byte(secret), base()), true},
		{"alg none", none, false},
		{"wrong key", sign(jwt.SigningMethodHS256, []byte("other-secret-other-secret-other-secret"), base()), false},
		{"HS384", sign(jwt.SigningMethodHS384, []byte(secret), base()), false},
		{"tampered payload", parts[0] + "." + strings.Split(sign(jwt.SigningMethodHS256, []byte("x"), with("id", "8")), ".")[1] + "." + parts[2], false},
		{"tampered signature", parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2])), false},
		{"expired", sign(jwt.SigningMethodHS256, []byte(secret), with("exp", now.Add(-time.Second).Unix())), false},
		{"no exp", sign(jwt.SigningMethodHS256, []byte(secret), with("exp", nil)), false},
		{"typ refresh", sign(jwt.SigningMethodHS256, []byte(secret), with("typ", "refresh")), false},
		{"no typ", sign(jwt.SigningMethodHS256, []byte(secret), with("typ", nil)), false},
		{"id not numeric", sign(jwt.SigningMethodHS256, []byte(secret), with("id", "x")), false},
		{"id zero", sign(jwt.SigningMethodHS256, []byte(secret), with("id", "0")), false},
		{"id number", sign(jwt.SigningMethodHS256, []byte(secret), with("id", 7)), false},
		{"no nickname", sign(jwt.SigningMethodHS256, []byte(secret), with("nickname", nil)), false},
		{"not before in future", sign(jwt.SigningMethodHS256, []byte(secret), with("nbf", now.Add(time.Minute).Unix())), false},
		{"huge", strings.Repeat("a", auth.MaxTokenLen+1), false},
		{"empty", "", false},
		{"garbage", "a.b.c", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.ParseAccess(tt.token)
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && !errors.Is(err, auth.ErrInvalidToken) {
				t.Fatalf("err = %v, want ErrInvalidToken", err)
			}
		})
	}
}
