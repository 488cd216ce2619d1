package store_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"rooms/gateway/internal/store"
	"rooms/shared/testenv"
)

// TestFanoutReports: a report sent with NotifyFanoutOK reaches a listener
// on the same database, and one on another database hears nothing.
func TestFanoutReports(t *testing.T) {
	db, other := testenv.Postgres(t), testenv.Postgres(t)
	s, o := store.New(db.Pool), store.New(other.Pool)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	heard := make(chan string, 16)
	otherHeard := make(chan string, 16)
	go s.ListenFanoutOK(ctx, slog.New(slog.DiscardHandler), func(id string) { heard <- id })
	go o.ListenFanoutOK(ctx, slog.New(slog.DiscardHandler), func(id string) { otherHeard <- id })
	// A listener may not be listening yet: report until it hears.
	until := func(st *store.Store, ch chan string, id string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for got := ""; got != id; {
			if err := st.NotifyFanoutOK(ctx, id); err != nil {
				t.Fatal(err)
			}
			select {
			case got = <-ch:
			case <-time.After(100 * time.Millisecond):
			case <-deadline:
				t.Fatalf("%s not heard within 30 s", id)
			}
		}
	}
	until(o, otherHeard, "gw-o") // the other listener is listening
	until(s, heard, "gw-a")
	for {
		select {
		case id := <-otherHeard:
			if id != "gw-o" {
				t.Fatalf("a listener on another database heard %q", id)
			}
		default:
			return
		}
	}
}
