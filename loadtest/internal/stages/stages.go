// Package stages reads the servers' own latency histograms (Prometheus, on
// their admin servers) around a benchmark step, so that a step's end-to-end
// latency can be split by stage: intake to Kafka, the worker's store and
// commit and Redis append, the gateways' fan-out read and socket write.
package stages

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"rooms/loadtest/internal/admin"
)

// Names are the histograms read, in pipeline order, with a short label.
var Names = []struct{ Metric, Label string }{
	{"rooms_gateway_ack_latency_seconds", "ack"},
	{"rooms_worker_store_seconds", "store"},
	{"rooms_worker_pg_commit_seconds", "commit"},
	{"rooms_worker_broadcast_seconds", "append"},
	{"rooms_gateway_fanout_read_lag_seconds", "read lag"},
	{"rooms_gateway_delivery_latency_seconds", "delivery"},
}

// Stage summarizes one histogram over a step: how many observations, p50
// and p99 estimated from the buckets (as PromQL's histogram_quantile does:
// linear within the bucket), and how many were over 50 and 100 ms.
type Stage struct {
	Count     int64   `json:"count"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	Over50ms  int64   `json:"over_50ms"`
	Over100ms int64   `json:"over_100ms"`
}

// hist is a cumulative histogram: counts[i] observations at or below
// bounds[i] (ascending, the last +Inf).
type hist struct {
	bounds []float64
	counts []float64
}

// Snapshot holds the histograms of Names, summed over the servers read.
type Snapshot map[string]*hist

// Scrape reads /metrics of every admin URL and sums the histograms of
// Names. A server that exposes none of them (or only some) is fine: a
// gateway has no worker histograms.
func Scrape(ctx context.Context, admins []string) (Snapshot, error) {
	snap := Snapshot{}
	for _, a := range admins {
		resp, err := admin.Get(ctx, a, "/metrics")
		if err != nil {
			return nil, err
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("parse %s/metrics: %w", a, err)
		}
		for _, n := range Names {
			f := fams[n.Metric]
			if f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
				continue
			}
			for _, m := range f.GetMetric() {
				snap.add(n.Metric, m.GetHistogram())
			}
		}
	}
	return snap, nil
}

func (s Snapshot) add(name string, h *dto.Histogram) {
	bs := h.GetBucket()
	cur := &hist{}
	for _, b := range bs {
		cur.bounds = append(cur.bounds, b.GetUpperBound())
		cur.counts = append(cur.counts, float64(b.GetCumulativeCount()))
	}
	if len(cur.bounds) == 0 || !math.IsInf(cur.bounds[len(cur.bounds)-1], 1) {
		cur.bounds = append(cur.bounds, math.Inf(1))
		cur.counts = append(cur.counts, float64(h.GetSampleCount()))
	}
	prev := s[name]
	if prev == nil {
		s[name] = cur
		return
	}
	if len(prev.bounds) != len(cur.bounds) {
		return // different buckets cannot be summed; keep the first
	}
	for i := range prev.counts {
		prev.counts[i] += cur.counts[i]
	}
}

// Between summarizes, per histogram of Names, what was observed between
// before and after (later snapshots of the same servers). Histograms with
// nothing observed in between are left out.
func Between(before, after Snapshot) map[string]Stage {
	out := map[string]Stage{}
	for _, n := range Names {
		a := after[n.Metric]
		if a == nil {
			continue
		}
		d := &hist{bounds: a.bounds, counts: append([]float64(nil), a.counts...)}
		if b := before[n.Metric]; b != nil && len(b.counts) == len(d.counts) {
			for i := range d.counts {
				d.counts[i] -= b.counts[i]
			}
		}
		total := d.counts[len(d.counts)-1]
		if total <= 0 {
			continue
		}
		out[n.Label] = Stage{
			Count:     int64(total),
			P50:       d.quantile(0.5) * 1000,
			P99:       d.quantile(0.99) * 1000,
			Over50ms:  int64(total - d.atOrBelow(0.05)),
			Over100ms: int64(total - d.atOrBelow(0.1)),
		}
	}
	return out
}

// atOrBelow is how many observations were at or below bound, which must be
// one of the bucket bounds (else the nearest bound below it counts).
func (h *hist) atOrBelow(bound float64) float64 {
	i := sort.SearchFloat64s(h.bounds, bound)
	switch {
	case i < len(h.bounds) && h.bounds[i] == bound:
		return h.counts[i]
	case i == 0:
		return 0
	default:
		return h.counts[i-1]
	}
}

// quantile estimates the q-quantile like histogram_quantile: linear
// interpolation within the bucket it falls in; in the +Inf bucket, the
// highest finite bound.
func (h *hist) quantile(q float64) float64 {
	total := h.counts[len(h.counts)-1]
	rank := q * total
	i := sort.Search(len(h.counts), func(i int) bool { return h.counts[i] >= rank })
	if i >= len(h.bounds)-1 {
		if len(h.bounds) < 2 {
			return 0
		}
		return h.bounds[len(h.bounds)-2]
	}
	lo, below := 0.0, 0.0
	if i > 0 {
		lo, below = h.bounds[i-1], h.counts[i-1]
	}
	in := h.counts[i] - below
	if in <= 0 {
		return h.bounds[i]
	}
	return lo + (h.bounds[i]-lo)*(rank-below)/in
}

// Line is the step's stages in one line, in pipeline order: p50/p99 in ms,
// and how many were over 100 ms where any were.
func Line(st map[string]Stage) string {
	var parts []string
	for _, n := range Names {
		s, ok := st[n.Label]
		if !ok {
			continue
		}
		p := fmt.Sprintf("%s %.1f/%.1f", n.Label, s.P50, s.P99)
		if s.Over100ms > 0 {
			p += fmt.Sprintf(" (%d>100ms)", s.Over100ms)
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return ""
	}
	return "stages p50/p99 ms: " + strings.Join(parts, ", ")
}
