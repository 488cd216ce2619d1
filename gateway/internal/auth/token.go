package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Claims identify the holder of a valid access token (or ticket).
type Claims struct {
	UserID    int64     `json:"user_id"`
	Nickname  string    `json:"nickname"`
	FamilyID  string    `json:"family_id"` // the login's refresh family
	ExpiresAt time.Time `json:"expires_at"`
}

// TypeAccess is the value of the "typ" claim of access tokens; a token with
// any other type is never accepted as an access token.
const TypeAccess = "access"

// MaxTokenLen bounds the length of a token accepted for parsing.
const MaxTokenLen = 4096

// jwtClaims is the JWT payload of an access token.
type jwtClaims struct {
	UserID   string `json:"id"`
	Nickname string `json:"nickname"`
	Type     string `json:"typ"`
	Family   string `json:"fam"`
	jwt.RegisteredClaims
}

// SignAccess returns an HS256 access token for c, issued at now and expiring
// at c.ExpiresAt.
func (a *Auth) SignAccess(c Claims, now time.Time) (string, error) {
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwtClaims{
		UserID:   strconv.FormatInt(c.UserID, 10),
		Nickname: c.Nickname,
		Type:     TypeAccess,
		Family:   c.FamilyID,
		RegisteredClaims: jwt.RegisteredClaims{
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
		},
	})
	s, err := tok.SignedString(a.secret)
	if err != nil {
		return "", fmt.Errorf("sign access token: %w", err)
	}
	return s, nil
}

// ParseAccess checks an access token (HS256 only, signature, expiry
// required and not passed, type "access", a positive user id) and returns
// its claims, or ErrInvalidToken.
func (a *Auth) ParseAccess(token string) (Claims, error) {
	if token == "" || len(token) > MaxTokenLen {
		return Claims{}, ErrInvalidToken
	}
	var jc jwtClaims
	_, err := jwt.ParseWithClaims(token, &jc, func(*jwt.Token) (any, error) { return a.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(a.now),
	)
	if err != nil {
		return Claims{}, ErrInvalidToken
	}
	id, err := strconv.ParseInt(jc.UserID, 10, 64)
	if jc.Type != TypeAccess || err != nil || id <= 0 || jc.Nickname == "" {
		return Claims{}, ErrInvalidToken
	}
	return Claims{UserID: id, Nickname: jc.Nickname, FamilyID: jc.Family, ExpiresAt: jc.ExpiresAt.Time}, nil
}

// randomToken returns n random bytes from the CSPRNG, base64url-encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand.Read never returns an error on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// newRefreshToken returns a new opaque refresh token (256 random bits) and
// the hash under which it is stored.
func newRefreshToken() (string, []byte) {
	t := randomToken(32)
	return t, hashToken(t)
}

func hashToken(t string) []byte {
	h := sha256.Sum256([]byte(t))
	return h[:]
}

func newFamilyID() string { return uuid.NewString() }
