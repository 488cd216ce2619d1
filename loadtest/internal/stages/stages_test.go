package stages

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// server serves a registry with two of Names' histograms, with the
// buckets the servers use.
func server(t *testing.T) (string, prometheus.Histogram, prometheus.Histogram) {
	t.Helper()
	reg := prometheus.NewRegistry()
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}
	commit := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rooms_worker_pg_commit_seconds", Help: "h", Buckets: buckets})
	ack := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rooms_gateway_ack_latency_seconds", Help: "h", Buckets: buckets})
	other := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "unrelated_seconds", Help: "h"})
	reg.MustRegister(commit, ack, other)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return srv.URL, commit, ack
}

func TestBetweenCountsWhatTheStepObserved(t *testing.T) {
	ctx := context.Background()
	worker, commit, _ := server(t)
	gateway, _, ack := server(t)
	admins := []string{worker, gateway}

	// Before the step: observations that must not count.
	for range 50 {
		commit.Observe(0.3)
	}
	before, err := Scrape(ctx, admins)
	if err != nil {
		t.Fatal(err)
	}
	// The step: 100 commits, 97 at 3 ms, 2 at 70 ms, 1 at 400 ms; 10 acks
	// at 8 ms.
	for range 97 {
		commit.Observe(0.003)
	}
	commit.Observe(0.07)
	commit.Observe(0.07)
	commit.Observe(0.4)
	for range 10 {
		ack.Observe(0.008)
	}
	after, err := Scrape(ctx, admins)
	if err != nil {
		t.Fatal(err)
	}

	st := Between(before, after)
	c, ok := st["commit"]
	if !ok || c.Count != 100 || c.Over50ms != 3 || c.Over100ms != 1 {
		t.Fatalf("commit = %+v (present %v), want 100 observed, 3 over 50 ms, 1 over 100 ms", c, ok)
	}
	// p50 falls in (2.5, 5] ms; p99 is the 99th of 100: in (50, 100] ms.
	if c.P50 <= 2.5 || c.P50 > 5 || c.P99 <= 50 || c.P99 > 100 {
		t.Fatalf("commit p50 %.2f ms, p99 %.2f ms; want p50 in (2.5, 5], p99 in (50, 100]", c.P50, c.P99)
	}
	if a := st["ack"]; a.Count != 10 || a.P99 <= 5 || a.P99 > 10 || a.Over50ms != 0 {
		t.Fatalf("ack = %+v, want 10 observed with p99 in (5, 10] ms", a)
	}
	if _, ok := st["store"]; ok {
		t.Fatalf("store present without a histogram: %+v", st)
	}
	line := Line(st)
	if !strings.Contains(line, "ack ") || !strings.Contains(line, "commit ") || !strings.Contains(line, "(1>100ms)") ||
		strings.Index(line, "ack") > strings.Index(line, "commit") {
		t.Fatalf("line %q: want ack before commit, and commit's one over 100 ms", line)
	}
}

func TestHistogramsOfSeveralServersAreSummed(t *testing.T) {
	ctx := context.Background()
	a, commitA, _ := server(t)
	b, commitB, _ := server(t)
	before, err := Scrape(ctx, []string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	commitA.Observe(0.2)
	commitB.Observe(0.2)
	commitB.Observe(0.001)
	after, err := Scrape(ctx, []string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if c := Between(before, after)["commit"]; c.Count != 3 || c.Over100ms != 2 {
		t.Fatalf("commit over two servers = %+v, want 3 observed, 2 over 100 ms", c)
	}
}

func TestScrapeFailsOnAServerThatDoesNotAnswer(t *testing.T) {
	srv := httptest.NewServer(nil)
	srv.Close()
	if _, err := Scrape(context.Background(), []string{srv.URL}); err == nil {
		t.Fatal("Scrape of a closed server: no error")
	}
}
