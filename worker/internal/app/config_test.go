package app_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"rooms/worker/internal/app"
)

// TestBadSettingsAreRefused checks that a setting that is not of its type,
// or is out of range, stops the worker at start with an error that names
// it, before it connects to anything.
func TestBadSettingsAreRefused(t *testing.T) {
	bad := []map[string]string{
		{"STORE_TRY_TIMEOUT": "-1s"},
		{"STORE_TRY_TIMEOUT": "soon"},
		{"BATCH_SIZE": "0"},
		{"BATCH_LINGER": "-1ms"},
		{"TX_INTERVAL": "-10ms"},
		{"MAX_ATTEMPTS": "0"},
		{"KAFKA_SESSION_TIMEOUT": "0s"},
		{"KAFKA_FETCH_WAIT": "-1ms"},
		{"KAFKA_FETCH_MIN_BYTES": "0"},
		{"KAFKA_PARTITIONS": "-2"},
		{"KAFKA_REPLICATION": "0"},
		{"MAX_CONTENT": "0"},
		{"STEP_ASIDE_AFTER": "-1s"},
		{"PG_MAX_CONNS": "-1"},
		{"LOG_LEVEL": "loud"},
		{"SHUTDOWN_TIMEOUT": "-5s"},
		{"BATCH_SIZE": "0", "BATCH_LINGER": "-1s"},
	}
	for _, m := range bad {
		err := app.Run(context.Background(), func(k string) string { return m[k] }, io.Discard)
		for k := range m {
			if err == nil || !strings.Contains(err.Error(), k) {
				t.Errorf("%v: err %v, want an error naming %s", m, err, k)
			}
		}
	}
}
