package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"rooms/worker/internal/metrics"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	if n, err := testutil.GatherAndCount(reg, "rooms_worker_store_retries_total"); err != nil || n != 2 {
		t.Errorf("store retries: %d series (%v), want 2 before any retry", n, err)
	}
	m.SetLag(3, 10)
	m.SetLag(3, -1) // a stale watermark: never negative
	m.SetLag(5, 4)
	if n := testutil.CollectAndCount(reg, "rooms_worker_consumer_lag"); n != 2 {
		t.Errorf("%d lag series, want 2", n)
	}
	m.DropLag(5)
	if n := testutil.CollectAndCount(reg, "rooms_worker_consumer_lag"); n != 1 {
		t.Errorf("%d lag series after DropLag, want 1", n)
	}
	if lint, err := testutil.GatherAndLint(reg); err != nil || len(lint) > 0 {
		t.Errorf("lint: %v %v", lint, err)
	}
}
