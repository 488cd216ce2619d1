package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"rooms/gateway/internal/metrics"
)

func TestNewRegistersEverySeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.Produce.QueueDepth(func() int { return 7 })
	// Labelled series known in advance exist before any event.
	for _, name := range []string{
		"rooms_gateway_messages_failed_total", "rooms_gateway_ws_connections",
		"rooms_gateway_ws_closes_total", "rooms_gateway_rate_limited_total",
		"rooms_gateway_fanout_entries_total", "rooms_gateway_fanout_gap_repairs_total",
		"rooms_gateway_kafka_queue_depth",
	} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n == 0 {
			t.Errorf("%s: %d series (%v), want some before any event", name, n, err)
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP rooms_gateway_kafka_queue_depth Records held by the Kafka producer: queued or in flight, waiting for their delivery report.
# TYPE rooms_gateway_kafka_queue_depth gauge
rooms_gateway_kafka_queue_depth 7
`), "rooms_gateway_kafka_queue_depth"); err != nil {
		t.Error(err)
	}
	if lint, err := testutil.GatherAndLint(reg); err != nil || len(lint) > 0 {
		t.Errorf("lint: %v %v", lint, err)
	}
}

func TestObserveEntryLag(t *testing.T) {
	m := metrics.Discard().Fanout
	now := time.UnixMilli(1_700_000_001_500)
	m.ObserveEntryLag("1700000000000-3", now) // 1.5 s
	m.ObserveEntryLag("not-an-id", now)       // ignored
	m.ObserveEntryLag("1700000002000-0", now) // ahead of this clock: 0
	var out dto.Metric
	if err := m.ReadLag.(prometheus.Metric).Write(&out); err != nil {
		t.Fatal(err)
	}
	if h := out.GetHistogram(); h.GetSampleCount() != 2 || h.GetSampleSum() != 1.5 {
		t.Errorf("count %d sum %v, want 2 and 1.5", h.GetSampleCount(), h.GetSampleSum())
	}
}
