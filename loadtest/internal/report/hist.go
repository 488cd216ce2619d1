// Package report turns what the benchmark measured into its report:
// HdrHistograms recorded per goroutine and merged, latency summaries, the
// human table and the JSON result file.
package report

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to 120 s with two
// significant digits (values are exact to within 1%), which keeps one
// histogram near 20 KB: the benchmark keeps two per connection.
const (
	lowest  = 1
	highest = 120_000_000
	sigfigs = 2
)

// Hist is a latency histogram. It is not safe for concurrent use: each
// goroutine records into its own and they are merged at the end.
type Hist struct{ h *hdrhistogram.Histogram }

// NewHist returns an empty histogram.
func NewHist() *Hist { return &Hist{h: hdrhistogram.New(lowest, highest, sigfigs)} }

// Record adds one latency; negative ones count as 0 and ones over the range
// as the highest value.
func (h *Hist) Record(d time.Duration) {
	us := d.Microseconds()
	if us < lowest {
		us = lowest
	}
	if us > highest {
		us = highest
	}
	_ = h.h.RecordValue(us)
}

// Merge adds every value of o.
func (h *Hist) Merge(o *Hist) { h.h.Merge(o.h) }

// Reset empties the histogram.
func (h *Hist) Reset() { h.h.Reset() }

// Count is the number of recorded values.
func (h *Hist) Count() int64 { return h.h.TotalCount() }

// Latency is a summary of a histogram in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary summarizes h.
func (h *Hist) Summary() Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	if h.h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count: h.h.TotalCount(),
		P50:   ms(h.h.ValueAtQuantile(50)),
		P90:   ms(h.h.ValueAtQuantile(90)),
		P99:   ms(h.h.ValueAtQuantile(99)),
		P999:  ms(h.h.ValueAtQuantile(99.9)),
		Max:   ms(h.h.Max()),
	}
}

// Recorder holds one connection's histograms of the current step: end-to-end
// latency of the messages it receives and ack latency of those it sends. Its
// reader goroutine records; the step's end merges and resets under the lock
// (uncontended otherwise). Values of another step than the current one are
// only counted as late.
type Recorder struct {
	mu   sync.Mutex
	step int
	e2e  *Hist
	ack  *Hist
	late int64
}

// NewRecorder returns a Recorder at step 0. Its histograms are allocated on
// first use, so idle connections cost nothing.
func NewRecorder() *Recorder { return &Recorder{} }

// E2E records an end-to-end latency of a message sent in step.
func (r *Recorder) E2E(step int, d time.Duration) {
	r.mu.Lock()
	if step != r.step {
		r.late++
	} else {
		if r.e2e == nil {
			r.e2e = NewHist()
		}
		r.e2e.Record(d)
	}
	r.mu.Unlock()
}

// Ack records the ack latency of a message sent in step.
func (r *Recorder) Ack(step int, d time.Duration) {
	r.mu.Lock()
	if step == r.step {
		if r.ack == nil {
			r.ack = NewHist()
		}
		r.ack.Record(d)
	}
	r.mu.Unlock()
}

// Collect merges the current step's histograms into e2e and ack, adds its
// late count to *late, resets them and moves on to step next.
func (r *Recorder) Collect(next int, e2e, ack *Hist, late *int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.e2e != nil {
		e2e.Merge(r.e2e)
		r.e2e.Reset()
	}
	if r.ack != nil {
		ack.Merge(r.ack)
		r.ack.Reset()
	}
	*late += r.late
	r.late = 0
	r.step = next
}

// SetStep moves to step without collecting.
func (r *Recorder) SetStep(step int) {
	r.mu.Lock()
	r.step = step
	r.mu.Unlock()
}
