package app_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"rooms/worker/internal/app"
)

// TestBadStoreTryTimeoutIsRefused checks that a STORE_TRY_TIMEOUT that is
// not a duration, or is negative, stops the worker at start with an error
// that names the setting, before it connects to anything.
func TestBadStoreTryTimeoutIsRefused(t *testing.T) {
	for _, v := range []string{"-1s", "soon"} {
		getenv := func(k string) string {
			if k == "STORE_TRY_TIMEOUT" {
				return v
			}
			return ""
		}
		err := app.Run(context.Background(), getenv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "STORE_TRY_TIMEOUT") {
			t.Errorf("STORE_TRY_TIMEOUT=%s: err %v, want an error naming STORE_TRY_TIMEOUT", v, err)
		}
	}
}
