package report_test

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"rooms/loadtest/internal/check"
	"rooms/loadtest/internal/procstat"
	"rooms/loadtest/internal/report"
	"rooms/loadtest/internal/stages"
)

func TestHistSummaryAndMerge(t *testing.T) {
	a, b := report.NewHist(), report.NewHist()
	for i := 1; i <= 99; i++ {
		a.Record(time.Duration(i) * time.Millisecond)
	}
	b.Record(time.Second)
	b.Record(-time.Second) // clamped to the lowest value
	a.Merge(b)
	s := a.Summary()
	if s.Count != 101 {
		t.Fatalf("count = %d", s.Count)
	}
	near := func(got, want float64) bool { return got >= want*0.98 && got <= want*1.02 }
	if !near(s.P50, 50) || !near(s.P99, 99) || !near(s.Max, 1000) {
		t.Fatalf("summary = %+v", s)
	}
	if (report.NewHist().Summary() != report.Latency{}) {
		t.Fatal("empty histogram has a summary")
	}
}

func TestRecorderCollectsOnlyItsStep(t *testing.T) {
	r := report.NewRecorder()
	r.SetStep(1)
	r.E2E(1, 10*time.Millisecond)
	r.E2E(0, 10*time.Millisecond) // a late delivery of an earlier step
	r.Ack(1, 2*time.Millisecond)
	e2e, ack := report.NewHist(), report.NewHist()
	var late int64
	r.Collect(2, e2e, ack, &late)
	if e2e.Count() != 1 || ack.Count() != 1 || late != 1 {
		t.Fatalf("e2e %d ack %d late %d", e2e.Count(), ack.Count(), late)
	}
	r.E2E(2, time.Millisecond)
	r.Collect(3, e2e, ack, &late)
	if e2e.Count() != 2 {
		t.Fatalf("after second collect e2e = %d", e2e.Count())
	}
}

func TestResultOutputs(t *testing.T) {
	res := &report.Result{
		Started: time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC), Targets: []string{"http://x"},
		Host: report.Host{CPUs: 2, LoopbackWriteUS: 7.06, WakeupSameCPUUS: 15.8, WakeupAcrossCPUsUS: 40.77},
		Workloads: []report.Workload{{
			Name: "chat", Shape: "s",
			Steps: []report.Step{{Name: "100", TargetRate: 100, Held: true, Valid: true,
				Stages:  map[string]stages.Stage{"commit": {Count: 10, P50: 3, P99: 120, Over50ms: 1, Over100ms: 1}},
				Machine: &procstat.MachineUsage{BusyPercent: 96.4, StealPercent: 0.5}},
				{Name: "200", TargetRate: 200}},
			Totals: check.Totals{Lost: 1}, Failed: true, Problems: []string{"1 lost"},
		}},
	}
	var buf bytes.Buffer
	res.WriteTable(&buf)
	if !strings.Contains(buf.String(), "FAILED: 1 lost") || !strings.Contains(buf.String(), "== chat") ||
		!strings.Contains(buf.String(), "loopback write 7.06 µs, wake-up round trip 15.8 µs on one CPU, 40.8 across two") ||
		!strings.Contains(buf.String(), "step 100 stages p50/p99 ms: commit 3.0/120.0 (1>100ms)") {
		t.Fatalf("table:\n%s", buf.String())
	}
	// The machine's busy share has a column; a step without it shows "-".
	var header string
	busy := map[string]string{}
	for line := range strings.SplitSeq(buf.String(), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "step" && strings.Contains(line, "busy %"):
			header = line
		case header != "" && len(f) > 3 && (f[0] == "100" || f[0] == "200"):
			busy[f[0]] = f[len(f)-3]
		}
	}
	if header == "" || busy["100"] != "96" || busy["200"] != "-" {
		t.Fatalf("busy %% column: header %q, values %v in\n%s", header, busy, buf.String())
	}
	if !res.Failed() {
		t.Fatal("Failed() = false")
	}
	path, err := res.WriteJSON(t.TempDir(), "quick")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(path, "quick-20261126-140000.json") {
		t.Fatalf("path %s", path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back report.Result
	if err := json.Unmarshal(raw, &back); err != nil || back.Workloads[0].Totals.Lost != 1 || back.Host.LoopbackWriteUS != 7.06 ||
		back.Host.WakeupAcrossCPUsUS != 40.77 ||
		back.Workloads[0].Steps[0].Machine == nil || *back.Workloads[0].Steps[0].Machine != (procstat.MachineUsage{BusyPercent: 96.4, StealPercent: 0.5}) ||
		back.Workloads[0].Steps[1].Machine != nil {
		t.Fatalf("round trip: %v %+v", err, back)
	}
}

// checkStepLine checks a per-step line of the table: line(s) is exactly
// want, the table of a workload with that step prints it, and a step
// without deliveries has no such line.
func checkStepLine(t *testing.T, name string, line func(report.Step) string, s report.Step, want string) {
	t.Helper()
	if got := line(s); got != want {
		t.Errorf("%s:\n got %q\nwant %q", name, got, want)
	}
	var buf bytes.Buffer
	(&report.Result{Workloads: []report.Workload{{Name: "chat", Steps: []report.Step{s}}}}).WriteTable(&buf)
	if !strings.Contains(buf.String(), want+"\n") {
		t.Errorf("table has no %s line:\n%s", name, buf.String())
	}
	if got := line(report.Step{Name: "x", Processes: s.Processes}); got != "" {
		t.Errorf("%s of a step without deliveries: %q", name, got)
	}
}

// stepRoundTrip is s after encoding to JSON and back.
func stepRoundTrip(t *testing.T, s report.Step) report.Step {
	t.Helper()
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back report.Step
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	return back
}

// The read and write calls of a step are shown per process and for the
// generator per delivered message; processes without figures, or with
// none, are left out.
func TestIOLine(t *testing.T) {
	s := report.Step{Name: "2000", Delivered: 100_000, DurationSeconds: 10,
		Processes: map[string]procstat.Usage{
			"gateway-1": {CPUSeconds: 2, IO: &procstat.IOCalls{Reads: 32_000, Writes: 120_000}},
			"postgres":  {CPUSeconds: 0.5, IO: &procstat.IOCalls{Reads: 0, Writes: 0}},
			"redis":     {CPUSeconds: 0.3, IO: &procstat.IOCalls{Reads: 5_000, Writes: 4_000}},
			"nginx":     {CPUSeconds: 0},
		},
		GeneratorIO: &procstat.IOCalls{Reads: 221_000, Writes: 11_000}}
	want := "read/write calls per delivered in step 2000 (/proc/<pid>/io: read(2) and write(2), not send or recv):" +
		"  gateway-1 0.32/1.20  redis 0.05/0.04  (generator 2.21/0.11)"
	checkStepLine(t, "IOLine", report.IOLine, s, want)
	// The figures survive the JSON round trip; a process without them has none.
	back := stepRoundTrip(t, s)
	if got := back.Processes["gateway-1"].IO; got == nil || *got != (procstat.IOCalls{Reads: 32_000, Writes: 120_000}) {
		t.Errorf("gateway-1's I/O after a JSON round trip: %+v", got)
	}
	if got := back.GeneratorIO; got == nil || *got != (procstat.IOCalls{Reads: 221_000, Writes: 11_000}) {
		t.Errorf("the generator's I/O after a JSON round trip: %+v", got)
	}
	if back.Processes["nginx"].IO != nil {
		t.Errorf("nginx has I/O figures after a JSON round trip: %+v", back.Processes["nginx"].IO)
	}
}

// The wake-ups of a step are shown per process, for the servers together
// and for the generator per delivered message; processes without the
// figure are left out.
func TestSwitchesLine(t *testing.T) {
	s := report.Step{Name: "2000", Delivered: 100_000, DurationSeconds: 10,
		Processes: map[string]procstat.Usage{
			"gateway-1": {CPUSeconds: 2, Switches: 52_000},
			"worker-1":  {CPUSeconds: 1, Switches: 31_000},
			"nginx":     {CPUSeconds: 0},
		},
		GeneratorSwitches: 110_000}
	want := "wake-ups per delivered in step 2000 (voluntary context switches of all threads):" +
		"  gateway-1 0.52  worker-1 0.31  servers 0.83  (generator 1.10)"
	checkStepLine(t, "SwitchesLine", report.SwitchesLine, s, want)
	if back := stepRoundTrip(t, s); back.Processes["gateway-1"].Switches != 52_000 || back.GeneratorSwitches != 110_000 {
		t.Errorf("switches after a JSON round trip: gateway-1 %d, generator %d", back.Processes["gateway-1"].Switches, back.GeneratorSwitches)
	}
	noFigures := report.Step{Name: "x", Delivered: 10, Processes: map[string]procstat.Usage{"nginx": {}}, GeneratorSwitches: 5}
	if got := report.SwitchesLine(noFigures); got != "" {
		t.Errorf("a step without the servers' figures: %q", got)
	}
}

// The busiest threads of a step are shown per process as CPU-µs per
// delivered message and switches a second; idle threads are left out.
func TestThreadsLine(t *testing.T) {
	s := report.Step{Name: "2000", Delivered: 100_000, DurationSeconds: 10,
		Processes: map[string]procstat.Usage{
			"gateway-1": {CPUSeconds: 2, Threads: []procstat.ThreadFigure{
				{Name: "gateway", CPUSeconds: 1.2, Switches: 9000},
				{Name: "gateway", CPUSeconds: 0.45, Switches: 34000},
				{Name: "rdk:main", CPUSeconds: 0.001, Switches: 100},
			}, MostSwitches: &procstat.ThreadFigure{Name: "gateway", CPUSeconds: 0.4, Switches: 36000}},
			"redis": {CPUSeconds: 0.3},
		}}
	want := "busiest threads in step 2000 (CPU-µs/delivered, voluntary switches/s; in a Go server the one with the most is sysmon):" +
		"  gateway-1 12.0/900 4.5/3400 (most switches 4.0/3600)"
	checkStepLine(t, "ThreadsLine", report.ThreadsLine, s, want)
}
