// Package auth registers and logs in users, issues and checks access tokens
// (HS256 JWTs), rotates refresh tokens (opaque, stored as SHA-256 hashes,
// with reuse detection per login family) and issues one-time WebSocket
// tickets kept in Redis.
//
// When a login's refresh family is revoked (logout or detected reuse), Auth
// publishes the family id on the Redis channel RevokedChannel(prefix), so
// that every gateway can close that login's WebSockets.
package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"rooms/gateway/internal/store"
)

// Errors returned to callers. Handlers map them to 401 responses.
var (
	// ErrInvalidCredentials is returned for an unknown nickname and for a
	// wrong password alike.
	ErrInvalidCredentials = errors.New("invalid nickname or password")
	// ErrInvalidToken is returned for a missing, malformed, tampered,
	// expired or wrong-type access token.
	ErrInvalidToken = errors.New("invalid or expired access token")
	// ErrInvalidRefresh is returned for an unknown, expired, revoked or
	// reused refresh token.
	ErrInvalidRefresh = errors.New("invalid refresh token")
	// ErrInvalidTicket is returned for an unknown, expired or already used
	// WebSocket ticket.
	ErrInvalidTicket = errors.New("invalid or expired ticket")
)

// MinSecretLen is the shortest accepted JWT signing secret, in bytes.
const MinSecretLen = 32

// Options configures an Auth.
type Options struct {
	Store  *store.Store
	Redis  redis.Cmdable
	Prefix string // Redis key prefix
	Secret []byte // HS256 key, at least MinSecretLen bytes

	AccessTTL  time.Duration
	RefreshTTL time.Duration
	TicketTTL  time.Duration

	HashConcurrency int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Auth is the account and token service. It is safe for concurrent use.
type Auth struct {
	store  *store.Store
	rdb    redis.Cmdable
	prefix string
	secret []byte

	accessTTL, refreshTTL, ticketTTL time.Duration

	hasher    *Hasher
	dummyHash string
	now       func() time.Time
}

// New returns an Auth. It computes one dummy password hash, spent on logins
// with an unknown nickname so that their timing matches a wrong password.
func New(ctx context.Context, o Options) (*Auth, error) {
	if len(o.Secret) < MinSecretLen {
		return nil, fmt.Errorf("jwt secret is %d bytes, need at least %d", len(o.Secret), MinSecretLen)
	}
	if o.AccessTTL <= 0 || o.RefreshTTL <= 0 || o.TicketTTL <= 0 {
		return nil, errors.New("token lifetimes must be positive")
	}
	a := &Auth{
		store: o.Store, rdb: o.Redis, prefix: o.Prefix, secret: o.Secret,
		accessTTL: o.AccessTTL, refreshTTL: o.RefreshTTL, ticketTTL: o.TicketTTL,
		hasher: NewHasher(o.HashConcurrency),
		now:    o.Now,
	}
	if a.now == nil {
		a.now = time.Now
	}
	dummy, err := a.hasher.Hash(ctx, "not a real password, only spent for timing")
	if err != nil {
		return nil, fmt.Errorf("dummy hash: %w", err)
	}
	a.dummyHash = dummy
	return a, nil
}

// AccessTTL is the lifetime of issued access tokens.
func (a *Auth) AccessTTL() time.Duration { return a.accessTTL }

// TicketTTL is the lifetime of issued WebSocket tickets.
func (a *Auth) TicketTTL() time.Duration { return a.ticketTTL }

// RevokedChannel is the Redis channel on which revoked family ids are
// published.
func RevokedChannel(prefix string) string { return prefix + "revoked" }

// Register creates a user. It returns store.ErrNicknameTaken when the
// nickname is in use. Input validation is the caller's job.
func (a *Auth) Register(ctx context.Context, nickname, password string) (store.User, error) {
	hash, err := a.hasher.Hash(ctx, password)
	if err != nil {
		return store.User{}, fmt.Errorf("register: %w", err)
	}
	u, err := a.store.CreateUser(ctx, nickname, hash)
	if err != nil {
		return store.User{}, fmt.Errorf("register: %w", err)
	}
	return u, nil
}

// Session is what a login or refresh hands to the client.
type Session struct {
	UserID       int64
	Nickname     string
	AccessToken  string
	RefreshToken string
	ExpiresIn    time.Duration
}

// Login checks the credentials and starts a new refresh family. It returns
// ErrInvalidCredentials for an unknown nickname and a wrong password alike,
// after spending one password hash in both cases.
func (a *Auth) Login(ctx context.Context, nickname, password string) (Session, error) {
	u, err := a.store.UserByNickname(ctx, nickname)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if _, err := a.hasher.Verify(ctx, password, a.dummyHash); err != nil {
			return Session{}, fmt.Errorf("login: %w", err)
		}
		return Session{}, ErrInvalidCredentials
	case err != nil:
		return Session{}, fmt.Errorf("login: %w", err)
	}
	ok, err := a.hasher.Verify(ctx, password, u.PasswordHash)
	if err != nil {
		return Session{}, fmt.Errorf("login: %w", err)
	}
	if !ok {
		return Session{}, ErrInvalidCredentials
	}
	family := newFamilyID()
	refresh, hash := newRefreshToken()
	now := a.now()
	if _, err := a.store.InsertRefreshToken(ctx, store.NewRefreshToken{
		Hash: hash, FamilyID: family, UserID: u.ID, ExpiresAt: now.Add(a.refreshTTL),
	}); err != nil {
		return Session{}, fmt.Errorf("login: %w", err)
	}
	return a.session(u.ID, u.Nickname, family, refresh, now)
}

func (a *Auth) session(userID int64, nickname, family, refresh string, now time.Time) (Session, error) {
	access, err := a.SignAccess(Claims{UserID: userID, Nickname: nickname, FamilyID: family, ExpiresAt: now.Add(a.accessTTL)}, now)
	if err != nil {
		return Session{}, err
	}
	return Session{UserID: userID, Nickname: nickname, AccessToken: access, RefreshToken: refresh, ExpiresIn: a.accessTTL}, nil
}
