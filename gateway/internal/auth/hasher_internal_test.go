package auth

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestHashWaitRespectsContext(t *testing.T) {
	h := NewHasher(1)
	h.sem <- struct{}{} // the only slot is busy
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := h.Hash(ctx, "password1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Hash with busy slot = %v, want deadline exceeded", err)
	}
	if _, err := h.Verify(ctx, "password1", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Verify with busy slot = %v, want deadline exceeded", err)
	}
	<-h.sem
	if _, err := h.Hash(context.Background(), "password1"); err != nil {
		t.Fatalf("Hash with free slot: %v", err)
	}
}
