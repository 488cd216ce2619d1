package ws

import (
	"errors"
	"testing"
	"time"
)

func TestConnLimiter(t *testing.T) {
	l := newConnLimiter(3, 2)
	a1, err := l.acquire(1)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := l.acquire(1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.acquire(1); !errors.Is(err, errUserFull) {
		t.Fatalf("third slot of user 1: %v, want errUserFull", err)
	}
	b1, err := l.acquire(2)
	if err != nil {
		t.Fatal(err)
	}
	if !l.full() {
		t.Fatal("not full with 3 of 3")
	}
	if _, err := l.acquire(3); !errors.Is(err, errNodeFull) {
		t.Fatalf("fourth slot: %v, want errNodeFull", err)
	}
	a1.release()
	a1.release() // a second release does nothing
	if total, user := l.counts(1); total != 2 || user != 1 {
		t.Fatalf("counts after release = %d, %d", total, user)
	}
	if !a2.claim() {
		t.Fatal("claim of a live slot failed")
	}
	a2.release()
	b1.release()
	if total, user := l.counts(2); total != 0 || user != 0 || len(l.perUser) != 0 {
		t.Fatalf("counts after all released = %d, %d, map %v", total, user, l.perUser)
	}

	// An upgraded connection that never starts gives its slot back.
	s, err := l.acquire(4)
	if err != nil {
		t.Fatal(err)
	}
	s.expireUnclaimed(10 * time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for total, _ := l.counts(4); total != 0; total, _ = l.counts(4) {
		if time.Now().After(deadline) {
			t.Fatal("unclaimed slot not released")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s.claim() {
		t.Fatal("claim of an expired slot succeeded")
	}
	s.release()
	if total, _ := l.counts(4); total != 0 {
		t.Fatalf("release after expiry counted twice: total %d", total)
	}

	// A claimed slot does not expire.
	s, _ = l.acquire(5)
	s.expireUnclaimed(time.Millisecond)
	if !s.claim() {
		t.Fatal("claim before expiry failed")
	}
	time.Sleep(20 * time.Millisecond)
	if total, _ := l.counts(5); total != 1 {
		t.Fatalf("claimed slot expired: total %d", total)
	}
	s.release()
}
