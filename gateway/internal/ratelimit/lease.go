package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// AllowAtMost takes up to n events' worth of key's budget at once and
// returns how many it got (0 when the limit is reached; retryAfter then
// says for how long). A zero limit allows all n.
func (l *Limiter) AllowAtMost(ctx context.Context, key string, limit Limit, n int) (allowed int, retryAfter time.Duration, err error) {
	if limit.Rate <= 0 {
		return n, 0, nil
	}
	res, err := l.rl.AllowAtMost(ctx, key, limit, n)
	if err != nil {
		return 0, 0, fmt.Errorf("rate limit %s: %w", key, err)
	}
	return res.Allowed, res.RetryAfter, nil
}

// Leased puts a per-process token lease in front of a Limiter, for limits
// checked on every message (the per-user send limit): instead of one Redis
// call per event it takes a few tokens from the shared budget at a time and
// spends them locally. Every event allowed was charged to the budget in
// Redis when its lease was taken, so the budget still bounds every key
// across all gateways: over any period a key gets at most what the limit
// allows plus the tokens its gateways held at the period's start (at most
// one lease each). Tokens not spent within the lease's lifetime are
// dropped, so a key spread over several gateways may also be refused a
// little early (again by at most one lease per gateway). The lifetime
// changes neither bound: it is how long a lease may wait for its events,
// and how long an idle key's entry is kept.
//
// The lease size is limit.Burst/8 (at least 1: small bursts are checked in
// Redis event by event, exactly as without the lease).
type Leased struct {
	l   *Limiter
	ttl time.Duration

	mu        sync.Mutex
	leases    map[string]*lease
	lastSweep time.Time
}

type lease struct {
	tokens  int
	expires time.Time
}

// NewLeased returns a Leased over l whose leased tokens live for ttl
// (default 1s).
func NewLeased(l *Limiter, ttl time.Duration) *Leased {
	if ttl <= 0 {
		ttl = time.Second
	}
	return &Leased{l: l, ttl: ttl, leases: map[string]*lease{}}
}

// Allow records one event under key and reports whether it is within limit,
// from a local lease when it holds a token, else by leasing more.
func (p *Leased) Allow(ctx context.Context, key string, limit Limit) (ok bool, retryAfter time.Duration, err error) {
	if limit.Rate <= 0 {
		return true, 0, nil
	}
	size := max(limit.Burst/8, 1)
	if size == 1 {
		return p.l.Allow(ctx, key, limit)
	}
	now := time.Now()
	p.mu.Lock()
	if le := p.leases[key]; le != nil && le.tokens > 0 && now.Before(le.expires) {
		le.tokens--
		p.mu.Unlock()
		return true, 0, nil
	}
	p.sweep(now)
	p.mu.Unlock()

	got, retryAfter, err := p.l.AllowAtMost(ctx, key, limit, size)
	if err != nil || got == 0 {
		return false, retryAfter, err
	}
	p.mu.Lock()
	le := p.leases[key]
	if le == nil || !now.Before(le.expires) {
		le = &lease{}
		p.leases[key] = le
	}
	le.tokens += got - 1 // one is spent on this event
	le.expires = now.Add(p.ttl)
	p.mu.Unlock()
	return true, 0, nil
}

// sweep drops expired leases, at most once per lease lifetime. p.mu is held.
func (p *Leased) sweep(now time.Time) {
	if now.Sub(p.lastSweep) < p.ttl {
		return
	}
	p.lastSweep = now
	for k, le := range p.leases {
		if !now.Before(le.expires) {
			delete(p.leases, k)
		}
	}
}
