// Package ratelimit enforces rate limits shared by every gateway instance,
// with GCRA state kept in Redis (go-redis/redis_rate).
//
// Every key lives under the configured Redis prefix as "{prefix}rl:{key}".
package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Limit is a rate: Rate events per Period with bursts up to Burst.
type Limit = redis_rate.Limit

// PerMinute is a limit of n events per minute with a burst of n.
func PerMinute(n int) Limit { return redis_rate.PerMinute(n) }

// PerSecond is a limit of n events per second with a burst of n.
func PerSecond(n int) Limit { return redis_rate.PerSecond(n) }

// Limiter checks limits. It is safe for concurrent use.
type Limiter struct {
	rl *redis_rate.Limiter
}

// New returns a Limiter storing its state in rdb under prefix.
func New(rdb redis.Cmdable, prefix string) *Limiter {
	return &Limiter{rl: redis_rate.NewLimiter(prefixed{Cmdable: rdb, prefix: prefix + "rl:"})}
}

// Allow records one event under key and reports whether it is within limit.
// When it is not, retryAfter is how long until the next event would be
// allowed. A zero limit (Rate 0) allows everything.
func (l *Limiter) Allow(ctx context.Context, key string, limit Limit) (ok bool, retryAfter time.Duration, err error) {
	if limit.Rate <= 0 {
		return true, 0, nil
	}
	res, err := l.rl.Allow(ctx, key, limit)
	if err != nil {
		return false, 0, fmt.Errorf("rate limit %s: %w", key, err)
	}
	if res.Allowed > 0 {
		return true, 0, nil
	}
	return false, res.RetryAfter, nil
}

// libraryPrefix is the prefix redis_rate puts in front of every key.
const libraryPrefix = "rate:"

// prefixed rewrites the keys redis_rate uses ("rate:{key}") to
// "{prefix}{key}", so that every key of the stack starts with its prefix.
type prefixed struct {
	redis.Cmdable
	prefix string
}

func (p prefixed) keys(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = p.prefix + strings.TrimPrefix(k, libraryPrefix)
	}
	return out
}

func (p prefixed) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.Cmdable.Eval(ctx, script, p.keys(keys), args...)
}

func (p prefixed) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.Cmdable.EvalSha(ctx, sha1, p.keys(keys), args...)
}

func (p prefixed) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.Cmdable.EvalRO(ctx, script, p.keys(keys), args...)
}

func (p prefixed) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.Cmdable.EvalShaRO(ctx, sha1, p.keys(keys), args...)
}

func (p prefixed) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	return p.Cmdable.Del(ctx, p.keys(keys)...)
}
