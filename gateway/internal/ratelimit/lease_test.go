package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"rooms/gateway/internal/ratelimit"
	"rooms/shared/testenv"
)

// TestLeasedNeverExceedsTheSharedBudget: two gateways (two Leased over the
// same Redis) spending one key's budget together are allowed no more than
// the budget, and a lone gateway gets all of it.
func TestLeasedNeverExceedsTheSharedBudget(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	// 40 per hour with a burst of 40: nothing refills during the test.
	limit := ratelimit.Limit{Rate: 40, Burst: 40, Period: time.Hour}

	a := ratelimit.NewLeased(ratelimit.New(rdb, prefix), time.Hour)
	b := ratelimit.NewLeased(ratelimit.New(rdb, prefix), time.Hour)
	allowed := 0
	for i := range 100 {
		g := a
		if i%3 == 0 {
			g = b
		}
		ok, _, err := g.Allow(ctx, "send:user:1", limit)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
		}
	}
	if allowed > 40 {
		t.Fatalf("allowed %d events of a budget of 40", allowed)
	}
	// Each gateway may strand at most one lease (5 tokens).
	if allowed < 40-2*5 {
		t.Fatalf("allowed only %d events of a budget of 40", allowed)
	}

	// One gateway alone spends the whole budget, then is refused with a
	// retry time.
	c := ratelimit.NewLeased(ratelimit.New(rdb, prefix), time.Hour)
	for i := range 40 {
		if ok, _, err := c.Allow(ctx, "send:user:2", limit); err != nil || !ok {
			t.Fatalf("event %d: ok=%v err=%v", i+1, ok, err)
		}
	}
	ok, retry, err := c.Allow(ctx, "send:user:2", limit)
	if err != nil || ok || retry <= 0 {
		t.Fatalf("event 41: ok=%v retry=%v err=%v, want refused with a retry time", ok, retry, err)
	}
}

// TestLeasedExpires: leased tokens are dropped after the lease's lifetime,
// and small bursts go to Redis event by event.
func TestLeasedExpires(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	l := ratelimit.New(rdb, prefix)
	p := ratelimit.NewLeased(l, 50*time.Millisecond)
	limit := ratelimit.Limit{Rate: 16, Burst: 16, Period: time.Hour} // leases of 2
	if ok, _, err := p.Allow(ctx, "k", limit); err != nil || !ok {
		t.Fatalf("first: %v %v", ok, err)
	}
	time.Sleep(100 * time.Millisecond) // the second leased token expires unused
	for i := range 14 {
		if ok, _, err := p.Allow(ctx, "k", limit); err != nil || !ok {
			t.Fatalf("event %d: %v %v", i+2, ok, err)
		}
	}
	// 1 + 1 stranded + 14 = 16: the budget is spent.
	if ok, _, err := p.Allow(ctx, "k", limit); err != nil || ok {
		t.Fatalf("after the budget: ok=%v err=%v, want refused", ok, err)
	}

	small := ratelimit.Limit{Rate: 3, Burst: 3, Period: time.Hour} // no lease
	for i, want := range []bool{true, true, true, false} {
		if ok, _, err := p.Allow(ctx, "s", small); err != nil || ok != want {
			t.Fatalf("small burst, event %d: ok=%v err=%v, want %v", i+1, ok, err, want)
		}
	}
}
