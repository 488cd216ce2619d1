package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"rooms/shared/retry"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		try  int
		want time.Duration
	}{
		{0, 10 * time.Millisecond},
		{1, 10 * time.Millisecond},
		{2, 20 * time.Millisecond},
		{4, 80 * time.Millisecond},
		{5, 100 * time.Millisecond},
		{1000, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := retry.Backoff(10*time.Millisecond, 100*time.Millisecond, tt.try); got != tt.want {
			t.Errorf("Backoff(try %d) = %v, want %v", tt.try, got, tt.want)
		}
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := retry.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep on a cancelled context = %v", err)
	}
	if err := retry.Sleep(context.Background(), time.Microsecond); err != nil {
		t.Fatalf("Sleep = %v", err)
	}
}
