// Package retry holds the capped exponential backoff every retrying loop of
// the binaries uses.
package retry

import (
	"context"
	"time"
)

// Backoff is lo doubled try-1 times, capped at hi.
func Backoff(lo, hi time.Duration, try int) time.Duration {
	d := lo
	for i := 1; i < try && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// Sleep waits d or until ctx ends, and returns ctx's error in that case.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
