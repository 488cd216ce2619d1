package auth_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"rooms/gateway/internal/auth"
	"rooms/gateway/internal/store"
	"rooms/shared/testenv"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newIntegration(t *testing.T) (*auth.Auth, *store.Store, *clock, string) {
	t.Helper()
	db := testenv.Postgres(t)
	rdb, prefix := testenv.Redis(t)
	st := store.New(db.Pool)
	clk := &clock{t: time.Now()}
	a, err := auth.New(context.Background(), auth.Options{
		Store: st, Redis: rdb, Prefix: prefix, Secret: []byte(secret),
		AccessTTL: 15 * time.Minute, RefreshTTL: time.Hour, TicketTTL: 30 * time.Second,
		HashConcurrency: 2, Now: clk.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a, st, clk, prefix
}

func TestLoginAndRefresh(t *testing.T) {
	a, _, clk, _ := newIntegration(t)
	ctx := context.Background()
	if _, err := a.Register(ctx, "Olga", "password1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Register(ctx, "OLGA", "password1"); !errors.Is(err, store.ErrNicknameTaken) {
		t.Fatalf("duplicate register: %v", err)
	}
	if _, err := a.Login(ctx, "olga", "wrong-pass"); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := a.Login(ctx, "nobody", "password1"); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("unknown user: %v", err)
	}
	s, err := a.Login(ctx, "olga", "password1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.ParseAccess(s.AccessToken)
	if err != nil || c.Nickname != "Olga" || c.UserID != s.UserID || c.FamilyID == "" {
		t.Fatalf("claims %+v, %v", c, err)
	}

	// Expiry of the refresh token.
	clk.add(time.Hour + time.Second)
	if _, err := a.Refresh(ctx, s.RefreshToken); !errors.Is(err, auth.ErrInvalidRefresh) {
		t.Fatalf("expired refresh: %v", err)
	}
}

// TestConcurrentRefresh presents one token from many goroutines at once:
// the family lock serializes them, each gets a pair (the first rotates, the
// rest are grace re-issues), and afterwards exactly one successor is valid.
func TestConcurrentRefresh(t *testing.T) {
	a, _, _, _ := newIntegration(t)
	ctx := context.Background()
	if _, err := a.Register(ctx, "pete", "password1"); err != nil {
		t.Fatal(err)
	}
	s0, err := a.Login(ctx, "pete", "password1")
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	results := make([]auth.Session, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = a.Refresh(ctx, s0.RefreshToken)
		}()
	}
	wg.Wait()
	valid := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("refresh %d: %v", i, errs[i])
		}
	}
	// Only one successor survives; using it works, the others are revoked.
	for i := range n {
		if _, err := a.Refresh(ctx, results[i].RefreshToken); err == nil {
			valid++
		} else if !errors.Is(err, auth.ErrInvalidRefresh) {
			t.Fatal(err)
		}
	}
	if valid != 1 {
		t.Fatalf("%d successors valid, want 1", valid)
	}
	// s0 is now reuse: the family is revoked.
	if _, err := a.Refresh(ctx, s0.RefreshToken); !errors.Is(err, auth.ErrInvalidRefresh) {
		t.Fatalf("reuse: %v", err)
	}
}

func TestLogoutPublishes(t *testing.T) {
	a, _, _, prefix := newIntegration(t)
	ctx := context.Background()
	rdb, _ := testenv.Redis(t)
	sub := rdb.Subscribe(ctx, auth.RevokedChannel(prefix))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Register(ctx, "quinn", "password1"); err != nil {
		t.Fatal(err)
	}
	s, err := a.Login(ctx, "quinn", "password1")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := a.ParseAccess(s.AccessToken)
	if err := a.Logout(ctx, s.RefreshToken); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-sub.Channel():
		if m.Payload != c.FamilyID {
			t.Fatalf("published %q, want %q", m.Payload, c.FamilyID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("nothing published")
	}
	for _, tok := range []string{s.RefreshToken, "unknown", ""} {
		if err := a.Logout(ctx, tok); err != nil {
			t.Fatalf("logout %q: %v", tok, err)
		}
	}
	if _, err := a.Refresh(ctx, s.RefreshToken); !errors.Is(err, auth.ErrInvalidRefresh) {
		t.Fatalf("refresh after logout: %v", err)
	}
}

func TestTickets(t *testing.T) {
	a, _, _, _ := newIntegration(t)
	ctx := context.Background()
	want := auth.Claims{UserID: 5, Nickname: "rita", FamilyID: "f-1", ExpiresAt: time.Date(2026, 11, 26, 15, 0, 0, 0, time.UTC)}
	ticket, err := a.IssueTicket(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.RedeemTicket(ctx, ticket)
	if err != nil || got.UserID != want.UserID || got.Nickname != want.Nickname || got.FamilyID != want.FamilyID || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("redeem = %+v, %v", got, err)
	}
	for _, tk := range []string{ticket, "unknown", "", string(make([]byte, 200))} {
		if _, err := a.RedeemTicket(ctx, tk); !errors.Is(err, auth.ErrInvalidTicket) {
			t.Fatalf("redeem %q again: %v", tk, err)
		}
	}
}
