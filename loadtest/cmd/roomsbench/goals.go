package main

import (
	"fmt"

	"rooms/loadtest/internal/report"
)

// The performance targets the benchmark is held to (docs/performance.md,
// "Against the targets"), each judged only when the run has the workload in
// the shape the target is stated for.
const (
	goalChatRate     = 2000   // msgs/s of the chat step the latency and CPU targets are for
	goalChatP99      = 50.0   // ms
	goalChatHeld     = 8000   // msgs/s
	goalCPU          = 15.0   // server CPU-µs per delivered message
	goalConnectP99   = 50.0   // ms
	goalKBPerConn    = 16.0   // KB of gateway Go memory per idle connection
	goalFanoutP99    = 50.0   // ms
	goalResumeWithin = 2000.0 // ms from reconnecting to the last missed message
)

// judge returns the targets this run can be judged on, with what it
// measured and whether each was met.
func judge(cfg config, res *report.Result) []report.Goal {
	var goals []report.Goal
	add := func(name, target, measured string, met bool) {
		goals = append(goals, report.Goal{Name: name, Target: target, Measured: measured, Met: met})
	}
	for _, wl := range res.Workloads {
		switch {
		case wl.Name == "chat" && cfg.Rooms == 100 && cfg.Clients == 10:
			if s, ok := stepAt(wl, goalChatRate); ok {
				add("chat 2000", fmt.Sprintf("e2e p99 ≤ %.0f ms, generator on time, nothing lost, duplicated or reordered", goalChatP99),
					stepOutcome(s), s.Valid && !s.Check.Broken() && s.E2E.P99 <= goalChatP99)
				add("chat CPU", fmt.Sprintf("≤ %.0f server CPU-µs per delivery at 2000 msgs/s", goalCPU),
					fmt.Sprintf("%.1f", s.CPUPerDelivery), s.CPUPerDelivery > 0 && s.CPUPerDelivery <= goalCPU)
			}
			// Judged once the steps reach the target or one of them did
			// not hold; below that the highest step held is only a bound.
			if top, knee, ok := steps(wl); top >= goalChatHeld || ok {
				measured := fmt.Sprintf("%.0f msgs/s (steps up to %.0f)", wl.HighestHeld, top)
				if ok {
					measured += fmt.Sprintf("; %.0f did not hold: %s", knee.TargetRate, stepOutcome(knee))
				}
				add("chat held", fmt.Sprintf("highest step held ≥ %d msgs/s", goalChatHeld), measured, wl.HighestHeld >= goalChatHeld)
			}
		case wl.Name == "fanout" && cfg.FanoutClients == 1000 && cfg.FanoutRate == 20:
			if s, ok := stepAt(wl, cfg.FanoutRate); ok {
				add("fanout", fmt.Sprintf("e2e p99 ≤ %.0f ms, generator on time, nothing lost, duplicated or reordered", goalFanoutP99),
					stepOutcome(s), s.Valid && !s.Check.Broken() && s.E2E.P99 <= goalFanoutP99)
			}
		case wl.Name == "connect" && cfg.ConnectClients == 5000 && cfg.ConnectRate == 500:
			connected := num(wl.Extra["connected"])
			lat := wl.Lat["connect_latency"]
			add("connect", fmt.Sprintf("all 5000 connected, connect p99 ≤ %.0f ms", goalConnectP99),
				fmt.Sprintf("%.0f connected, p99 %.1f ms", connected, lat.P99), connected == float64(cfg.ConnectClients) && lat.P99 <= goalConnectP99)
			if kb, ok := wl.Extra["gateway_go_kb_per_idle_connection"].(float64); ok {
				add("memory", fmt.Sprintf("≤ %.0f KB of gateway Go memory per idle connection", goalKBPerConn),
					fmt.Sprintf("%.1f KB", kb), kb <= goalKBPerConn)
			}
		case wl.Name == "resume" && cfg.ResumeClients == 200 && cfg.ResumeRate == 200:
			dropped, notRecovered := num(wl.Extra["dropped"]), num(wl.Extra["not_recovered"])
			catchUp := wl.Lat["catch_up"]
			add("resume", fmt.Sprintf("every resuming client has every missed message within %.0f s", goalResumeWithin/1000),
				fmt.Sprintf("%d of %.0f caught up (%.0f not recovered), slowest %.0f ms", catchUp.Count, dropped, notRecovered, catchUp.Max),
				!wl.Failed && dropped > 0 && float64(catchUp.Count) == dropped && notRecovered == 0 && catchUp.Max <= goalResumeWithin)
		}
	}
	return goals
}

// stepAt is wl's non-warm-up step at rate msgs/s.
func stepAt(wl report.Workload, rate float64) (report.Step, bool) {
	for _, s := range wl.Steps {
		if !s.Warmup && s.TargetRate == rate {
			return s, true
		}
	}
	return report.Step{}, false
}

// steps returns the highest rate of wl's steps and the lowest step that
// did not hold, if one did not (warm-ups aside).
func steps(wl report.Workload) (top float64, knee report.Step, ok bool) {
	for _, s := range wl.Steps {
		if s.Warmup {
			continue
		}
		top = max(top, s.TargetRate)
		if !s.Held && (!ok || s.TargetRate < knee.TargetRate) {
			knee, ok = s, true
		}
	}
	return top, knee, ok
}

// num is a count or measure of a workload's Extra as a float64 (0 when
// missing).
func num(v any) float64 {
	switch n := v.(type) {
	case int:
		return float64(n)
	case int64:
		return float64(n)
	case float64:
		return n
	}
	return 0
}

// stepOutcome says in a few words how a step went.
func stepOutcome(s report.Step) string {
	out := fmt.Sprintf("p99 %.1f ms", s.E2E.P99)
	if !s.Valid {
		out += fmt.Sprintf(", generator behind (send lag p99 %.1f ms)", s.SendLag.P99)
	}
	if s.Machine != nil {
		out += fmt.Sprintf(", machine %.0f %% busy", s.Machine.BusyPercent)
	}
	if s.Check.Broken() {
		out += fmt.Sprintf(", lost %d, duplicated %d, reordered %d, seq gaps %d", s.Check.Lost, s.Check.Dups, s.Check.Reorders, s.Check.SeqGaps)
	}
	// A PostgreSQL commit (the round trip with the writes and the COMMIT)
	// that took over 100 ms holds up every message behind it: on a machine
	// whose disk stalls its flushes now and then, that decides a step's
	// p99 more than the code does.
	if n := s.Stages["commit"].Over100ms; n > 0 {
		out += fmt.Sprintf(", %d commits over 100 ms", n)
	}
	return out
}
