package main

import (
	"io"
	"testing"

	"rooms/loadtest/internal/check"
	"rooms/loadtest/internal/procstat"
	"rooms/loadtest/internal/report"
	"rooms/loadtest/internal/stages"
)

// standardRun is a run of the whole benchmark in its standard shapes, with
// machine C's figures (docs/performance.md): every target met but the
// highest step held and the CPU.
func standardRun() *report.Result {
	step := func(rate, p99, cpu float64, valid, held bool) report.Step {
		return report.Step{Name: "x", TargetRate: rate, E2E: report.Latency{P99: p99}, SendLag: report.Latency{P99: 2.5},
			CPUPerDelivery: cpu, Valid: valid, Held: held, Check: check.Totals{Expected: 10, Received: 10}}
	}
	warm := step(250, 20, 200, true, false)
	warm.Warmup = true
	return &report.Result{Workloads: []report.Workload{
		{Name: "chat", HighestHeld: 2000, Steps: []report.Step{
			warm, step(250, 20, 190, true, true), step(2000, 36.9, 50.0, true, true), step(4000, 89.1, 34, false, false)}},
		{Name: "fanout", Steps: []report.Step{step(20, 25.9, 16, true, true)}},
		{Name: "connect", Lat: map[string]report.Latency{"connect_latency": {Count: 5000, P99: 4.3}},
			Extra: map[string]any{"connected": 5000, "failed": 0, "gateway_go_kb_per_idle_connection": 7.1}},
		{Name: "resume", Lat: map[string]report.Latency{"catch_up": {Count: 200, Max: 205}},
			Extra: map[string]any{"dropped": int64(200), "not_recovered": int64(0)}},
	}}
}

func verdicts(goals []report.Goal) map[string]bool {
	out := map[string]bool{}
	for _, g := range goals {
		out[g.Name] = g.Met
	}
	return out
}

func TestJudgeStandardRun(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := verdicts(judge(cfg, standardRun()))
	want := map[string]bool{"chat 2000": true, "chat CPU": false, "chat held": false,
		"fanout": true, "connect": true, "memory": true, "resume": true}
	if len(got) != len(want) {
		t.Fatalf("goals %v, want %v", got, want)
	}
	for name, met := range want {
		if v, ok := got[name]; !ok || v != met {
			t.Errorf("goal %q: met %v (judged %v), want %v", name, v, ok, met)
		}
	}
}

func TestJudgeMisses(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		goal  string
		spoil func(r *report.Result)
	}{
		{"chat 2000", func(r *report.Result) { r.Workloads[0].Steps[2].Valid = false }},
		{"chat 2000", func(r *report.Result) { r.Workloads[0].Steps[2].Check.Lost = 1 }},
		{"chat 2000", func(r *report.Result) { r.Workloads[0].Steps[2].E2E.P99 = 50.1 }},
		{"fanout", func(r *report.Result) { r.Workloads[1].Steps[0].Check.Reorders = 1 }},
		{"connect", func(r *report.Result) { r.Workloads[2].Extra["connected"] = 4999 }},
		{"connect", func(r *report.Result) { r.Workloads[2].Lat["connect_latency"] = report.Latency{P99: 51} }},
		{"memory", func(r *report.Result) { r.Workloads[2].Extra["gateway_go_kb_per_idle_connection"] = 16.5 }},
		{"resume", func(r *report.Result) { r.Workloads[3].Lat["catch_up"] = report.Latency{Count: 199, Max: 205} }},
		{"resume", func(r *report.Result) { r.Workloads[3].Lat["catch_up"] = report.Latency{Count: 200, Max: 2001} }},
		{"resume", func(r *report.Result) { r.Workloads[3].Extra["not_recovered"] = int64(1) }},
	}
	for _, tt := range tests {
		r := standardRun()
		tt.spoil(r)
		if met, ok := verdicts(judge(cfg, r))[tt.goal]; !ok || met {
			t.Errorf("spoiled %q: met %v (judged %v), want missed", tt.goal, met, ok)
		}
	}
}

func TestJudgeOnlyStandardShapes(t *testing.T) {
	// The quick run's shapes: nothing to judge.
	cfg, err := parseFlags([]string{"-workloads", "chat,resume", "-rooms", "10", "-clients", "5", "-steps", "100,200",
		"-resume-clients", "10", "-resume-rate", "50"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r := standardRun()
	r.Workloads = []report.Workload{r.Workloads[0], r.Workloads[3]}
	if goals := judge(cfg, r); len(goals) != 0 {
		t.Fatalf("goals of a run in other shapes: %v", goals)
	}
	// Steps that all held below 8000 bound the highest step held but do
	// not judge it.
	cfg, _ = parseFlags(nil, io.Discard)
	r = standardRun()
	r.Workloads[0].Steps = r.Workloads[0].Steps[:3]
	if _, ok := verdicts(judge(cfg, r))["chat held"]; ok {
		t.Fatal("chat held judged on steps that all held below the target")
	}
}

// A step's slow COMMITs are named with its outcome, and the highest step
// held names the lowest step that did not hold and why.
func TestJudgeNamesWhatHeldAStepUp(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r := standardRun()
	chat := r.Workloads[0].Steps
	chat[2].E2E.P99 = 120
	chat[2].Stages = map[string]stages.Stage{"commit": {Count: 200, P99: 90, Over100ms: 3}}
	chat[1].Held = false
	chat[1].E2E.P99 = 157
	chat[1].Stages = map[string]stages.Stage{"commit": {Count: 50, P99: 40, Over100ms: 2}}
	r.Workloads[0].HighestHeld = 0
	measured := map[string]string{}
	for _, g := range judge(cfg, r) {
		measured[g.Name] = g.Measured
	}
	if want := "p99 120.0 ms, 3 commits over 100 ms"; measured["chat 2000"] != want {
		t.Errorf("chat 2000 measured %q, want %q", measured["chat 2000"], want)
	}
	if want := "0 msgs/s (steps up to 4000); 250 did not hold: p99 157.0 ms, 2 commits over 100 ms"; measured["chat held"] != want {
		t.Errorf("chat held measured %q, want %q", measured["chat held"], want)
	}
	// Without slow commits the outcome says nothing of them.
	if got := stepOutcome(r.Workloads[1].Steps[0]); got != "p99 25.9 ms" {
		t.Errorf("fanout outcome %q, want %q", got, "p99 25.9 ms")
	}
	// A step that measured the machine says how busy it was, after the
	// generator's lag.
	st := chat[2]
	st.Valid, st.SendLag.P99 = false, 14.0
	st.Machine = &procstat.MachineUsage{BusyPercent: 96.4}
	if got, want := stepOutcome(st), "p99 120.0 ms, generator behind (send lag p99 14.0 ms), machine 96 % busy, 3 commits over 100 ms"; got != want {
		t.Errorf("outcome %q, want %q", got, want)
	}
}
