package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"rooms/loadtest/internal/check"
	"rooms/loadtest/internal/procstat"
	"rooms/loadtest/internal/stages"
)

// Step is the result of one step of a workload.
type Step struct {
	Name string `json:"name"`
	// Warmup steps are reported but never count as held.
	Warmup          bool    `json:"warmup,omitempty"`
	TargetRate      float64 `json:"target_rate"`
	DurationSeconds float64 `json:"duration_seconds"`
	// Published and Delivered are per second over the step; Sent, Acked,
	// Refused, WriteFailed and Delivered* are counts.
	Published     float64                   `json:"published_per_second"`
	DeliveredRate float64                   `json:"delivered_per_second"`
	Sent          int64                     `json:"sent"`
	WriteFailed   int64                     `json:"write_failed"`
	Acked         int64                     `json:"acked"`
	Refused       int64                     `json:"refused"`
	Unconfirmed   int64                     `json:"unconfirmed"`
	Expected      int64                     `json:"expected_deliveries"`
	Delivered     int64                     `json:"delivered"`
	DeliveryRatio float64                   `json:"delivery_ratio"`
	Late          int64                     `json:"late_deliveries"`
	Check         check.Totals              `json:"check"`
	Ack           Latency                   `json:"ack_latency"`
	E2E           Latency                   `json:"e2e_latency"`
	SendLag       Latency                   `json:"send_lag"`
	Valid         bool                      `json:"valid"`
	Held          bool                      `json:"held"`
	Note          string                    `json:"note,omitempty"`
	Processes     map[string]procstat.Usage `json:"processes,omitempty"`
	// Stages are the servers' own latency histograms over the step, by
	// stage (see internal/stages); StagesError says why they are missing.
	Stages         map[string]stages.Stage `json:"stages,omitempty"`
	StagesError    string                  `json:"stages_error,omitempty"`
	ServerCPU      float64                 `json:"server_cpu_seconds"`
	CPUPerDelivery float64                 `json:"server_cpu_us_per_delivered"`
	// CPUPerDeliveryByProcess is CPU-µs per delivered message per process.
	CPUPerDeliveryByProcess map[string]float64 `json:"cpu_us_per_delivered_by_process,omitempty"`
	// GeneratorCPU is the load generator's own CPU over the same interval
	// (not part of ServerCPU): on one machine it competes with the servers.
	GeneratorCPU            float64 `json:"generator_cpu_seconds"`
	GeneratorCPUPerDelivery float64 `json:"generator_cpu_us_per_delivered"`
	// GeneratorIO is the load generator's own read and write calls over
	// the same interval (its sampling of /proc included); nil when
	// /proc/self/io could not be read.
	GeneratorIO *procstat.IOCalls `json:"generator_io_calls,omitempty"`
	// GeneratorSwitches are the voluntary context switches of all the
	// load generator's threads over the same interval (0: not measured).
	GeneratorSwitches int64 `json:"generator_voluntary_switches,omitempty"`
	// Machine is how busy the whole machine's CPUs were over the step
	// (/proc/stat): near 100 % the generator and the servers wait for a
	// CPU, whatever the code does. nil when /proc/stat could not be read.
	Machine *procstat.MachineUsage `json:"machine,omitempty"`
}

// Workload is the result of one workload.
type Workload struct {
	Name   string             `json:"name"`
	Shape  string             `json:"shape"`
	Steps  []Step             `json:"steps,omitempty"`
	Totals check.Totals       `json:"totals"`
	Errors map[string]int64   `json:"error_frames,omitempty"`
	Closes map[string]int64   `json:"unexpected_closes,omitempty"`
	Extra  map[string]any     `json:"extra,omitempty"`
	Lat    map[string]Latency `json:"latencies,omitempty"`
	// HighestHeld is the highest non-warm-up step that held.
	HighestHeld float64  `json:"highest_step_held"`
	Failed      bool     `json:"failed"`
	Problems    []string `json:"problems,omitempty"`
}

// Result is one benchmark run.
type Result struct {
	Started   time.Time  `json:"started"`
	Finished  time.Time  `json:"finished"`
	Command   string     `json:"command"`
	Targets   []string   `json:"targets"`
	Host      Host       `json:"host"`
	Note      string     `json:"note,omitempty"`
	Workloads []Workload `json:"workloads"`
	// Goals are the performance targets this run could be judged on.
	Goals []Goal `json:"goals,omitempty"`
}

// Goal is one performance target, what the run measured and whether the
// run met it.
type Goal struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// Host describes the machine.
type Host struct {
	Hostname string  `json:"hostname"`
	CPUs     int     `json:"cpus"`
	CPUModel string  `json:"cpu_model"`
	MemoryGB float64 `json:"memory_gb"`
	Kernel   string  `json:"kernel"`
	GoVer    string  `json:"go"`
	Load1    string  `json:"load_average_at_start"`
	// LoopbackWriteUS is the CPU one 160-byte write to a loopback TCP
	// socket costs here (cmd/wirecost, one P, 20 000 writes/s over 1000
	// connections), measured before the run: the floor under a delivery,
	// and what tells machines of the same kind apart. 0: not measured.
	LoopbackWriteUS float64 `json:"loopback_write_us,omitempty"`
	// WakeupSameCPUUS and WakeupAcrossCPUsUS are the CPU (both sides
	// together) of one wake-up round trip between two processes over
	// pipes, both on one CPU, and on two (cmd/wirecost -wakeups): every
	// message crosses several processes, each crossing a wake-up. 0: not
	// measured.
	WakeupSameCPUUS    float64 `json:"wakeup_same_cpu_us,omitempty"`
	WakeupAcrossCPUsUS float64 `json:"wakeup_across_cpus_us,omitempty"`
}

// Failed reports whether any workload failed its checks.
func (r *Result) Failed() bool {
	for _, w := range r.Workloads {
		if w.Failed {
			return true
		}
	}
	return false
}

// WriteJSON writes r to dir/<prefix>-<date>.json and returns the path.
func (r *Result) WriteJSON(dir, prefix string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, prefix+"-"+r.Started.UTC().Format("20060102-150405")+".json")
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, append(raw, '\n'), 0o644)
}

func ms(v float64) string { return fmt.Sprintf("%.1f", v) }

// WriteTable writes the human report.
func (r *Result) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "\nRooms benchmark %s  targets %s\n", r.Started.Format(time.RFC3339), strings.Join(r.Targets, " "))
	fmt.Fprintf(w, "host %s: %d CPUs (%s), %.1f GB, load %s", r.Host.Hostname, r.Host.CPUs, r.Host.CPUModel, r.Host.MemoryGB, r.Host.Load1)
	if r.Host.LoopbackWriteUS > 0 {
		fmt.Fprintf(w, ", loopback write %.2f µs", r.Host.LoopbackWriteUS)
	}
	if r.Host.WakeupSameCPUUS > 0 {
		fmt.Fprintf(w, ", wake-up round trip %.1f µs on one CPU", r.Host.WakeupSameCPUUS)
		if r.Host.WakeupAcrossCPUsUS > 0 {
			fmt.Fprintf(w, ", %.1f across two", r.Host.WakeupAcrossCPUsUS)
		}
	}
	fmt.Fprintln(w)
	if r.Note != "" {
		fmt.Fprintf(w, "note: %s\n", r.Note)
	}
	for _, wl := range r.Workloads {
		fmt.Fprintf(w, "\n== %s (%s)\n", wl.Name, wl.Shape)
		if len(wl.Steps) > 0 {
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "step\tpub/s\tdeliv/s\tratio\tlost\tdup\treord\tgaps\tack p50\tack p99\te2e p50\tp90\tp99\tp99.9\tmax\tlag p99\tcpu µs/msg\tgen µs/msg\tbusy %\tvalid\theld\t")
			for _, s := range wl.Steps {
				fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.4f\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%s\t%v\t%v\t\n",
					s.Name, s.Published, s.DeliveredRate, s.DeliveryRatio, s.Check.Lost, s.Check.Dups, s.Check.Reorders, s.Check.SeqGaps,
					ms(s.Ack.P50), ms(s.Ack.P99), ms(s.E2E.P50), ms(s.E2E.P90), ms(s.E2E.P99), ms(s.E2E.P999), ms(s.E2E.Max),
					ms(s.SendLag.P99), s.CPUPerDelivery, s.GeneratorCPUPerDelivery, s.BusyPercent(), s.Valid, s.Held)
			}
			tw.Flush()
			last := wl.Steps[len(wl.Steps)-1]
			if len(last.Processes) > 0 {
				fmt.Fprintf(w, "server processes in step %s (CPU s, CPU-µs/delivered, peak RSS MB):", last.Name)
				for _, name := range sortedKeys(last.Processes) {
					u := last.Processes[name]
					fmt.Fprintf(w, "  %s %.2f/%.1f/%.0f", name, u.CPUSeconds, last.CPUPerDeliveryByProcess[name], float64(u.PeakRSS)/(1<<20))
				}
				fmt.Fprintln(w)
				if line := ThreadsLine(last); line != "" {
					fmt.Fprintln(w, line)
				}
				if line := IOLine(last); line != "" {
					fmt.Fprintln(w, line)
				}
				if line := SwitchesLine(last); line != "" {
					fmt.Fprintln(w, line)
				}
			}
			for _, st := range wl.Steps {
				if line := stages.Line(st.Stages); line != "" {
					fmt.Fprintf(w, "step %s %s\n", st.Name, line)
				}
			}
		}
		for _, name := range sortedKeys(wl.Lat) {
			l := wl.Lat[name]
			fmt.Fprintf(w, "%s: n=%d p50 %s ms, p90 %s, p99 %s, p99.9 %s, max %s\n", name, l.Count, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max))
		}
		for _, k := range sortedKeys(wl.Extra) {
			fmt.Fprintf(w, "%s: %v\n", k, wl.Extra[k])
		}
		t := wl.Totals
		fmt.Fprintf(w, "check: expected %d received %d lost %d duplicates %d reordered %d seq gaps %d seq repeats %d\n",
			t.Expected, t.Received, t.Lost, t.Dups, t.Reorders, t.SeqGaps, t.SeqRepeats)
		if len(wl.Errors) > 0 {
			fmt.Fprintf(w, "error frames: %v\n", wl.Errors)
		}
		if len(wl.Closes) > 0 {
			fmt.Fprintf(w, "unexpected closes by code (-1: failed redial): %v\n", wl.Closes)
		}
		if wl.HighestHeld > 0 {
			fmt.Fprintf(w, "highest step held: %.0f msgs/s\n", wl.HighestHeld)
		}
		status := "OK"
		if wl.Failed {
			status = "FAILED: " + strings.Join(wl.Problems, "; ")
		}
		fmt.Fprintf(w, "result: %s\n", status)
	}
	if len(r.Goals) > 0 {
		met := 0
		fmt.Fprintf(w, "\n== targets (docs/performance.md)\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, g := range r.Goals {
			verdict := "missed"
			if g.Met {
				verdict = "met"
				met++
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.Name, verdict, g.Measured, g.Target)
		}
		tw.Flush()
		fmt.Fprintf(w, "targets met: %d of %d\n", met, len(r.Goals))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// BusyPercent is the machine's busy share over the step for the table
// ("-" when it was not measured).
func (s Step) BusyPercent() string {
	if s.Machine == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f", s.Machine.BusyPercent)
}

// IOLine shows the read and write calls of each process in step s per
// delivered message (procstat.IOCalls: the Go servers' and Redis's socket
// reads and writes; PostgreSQL and librdkafka use send and recv, which are
// not counted), or "" when the step has no such figures. One delivery's
// floor is one write by a gateway and one read by the client.
func IOLine(s Step) string {
	if s.Delivered == 0 {
		return ""
	}
	var b strings.Builder
	for _, name := range sortedKeys(s.Processes) {
		io := s.Processes[name].IO
		if io == nil || io.Reads+io.Writes == 0 {
			continue
		}
		d := float64(s.Delivered)
		fmt.Fprintf(&b, "  %s %.2f/%.2f", name, float64(io.Reads)/d, float64(io.Writes)/d)
	}
	if io := s.GeneratorIO; io != nil && io.Reads+io.Writes > 0 {
		d := float64(s.Delivered)
		fmt.Fprintf(&b, "  (generator %.2f/%.2f)", float64(io.Reads)/d, float64(io.Writes)/d)
	}
	if b.Len() == 0 {
		return ""
	}
	return fmt.Sprintf("read/write calls per delivered in step %s (/proc/<pid>/io: read(2) and write(2), not send or recv):%s", s.Name, b.String())
}

// SwitchesLine shows the wake-ups of each process in step s per delivered
// message (procstat.Usage.Switches: the voluntary context switches of all
// its threads), the servers' together, and the generator's, or "" when the
// step has no such figures. A message crossing to another process costs a
// wake-up when the thread taking it was waiting, and on a machine where a
// wake-up is dear they, not the work in between, decide much of the CPU
// per delivery ("Machine L" in docs/performance.md).
func SwitchesLine(s Step) string {
	if s.Delivered == 0 {
		return ""
	}
	d := float64(s.Delivered)
	var b strings.Builder
	var servers int64
	for _, name := range sortedKeys(s.Processes) {
		n := s.Processes[name].Switches
		if n == 0 {
			continue
		}
		servers += n
		fmt.Fprintf(&b, "  %s %.2f", name, float64(n)/d)
	}
	if b.Len() == 0 {
		return ""
	}
	fmt.Fprintf(&b, "  servers %.2f", float64(servers)/d)
	if n := s.GeneratorSwitches; n > 0 {
		fmt.Fprintf(&b, "  (generator %.2f)", float64(n)/d)
	}
	return fmt.Sprintf("wake-ups per delivered in step %s (voluntary context switches of all threads):%s", s.Name, b.String())
}

// ThreadsLine shows the busiest threads of each process in step s, each as
// CPU-µs per delivered message and voluntary context switches a second
// (threads that used under 0.05 µs per delivery are left out), and the
// thread that switched most, or "" when the step has no thread figures.
func ThreadsLine(s Step) string {
	if s.Delivered == 0 || s.DurationSeconds <= 0 {
		return ""
	}
	fig := func(t procstat.ThreadFigure) (string, bool) {
		us := t.CPUSeconds * 1e6 / float64(s.Delivered)
		return fmt.Sprintf("%.1f/%.0f", us, float64(t.Switches)/s.DurationSeconds), us >= 0.05
	}
	var b strings.Builder
	for _, name := range sortedKeys(s.Processes) {
		u := s.Processes[name]
		var parts []string
		for _, t := range u.Threads {
			if f, ok := fig(t); ok {
				parts = append(parts, f)
			}
		}
		if len(parts) == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %s %s", name, strings.Join(parts, " "))
		if u.MostSwitches != nil {
			f, _ := fig(*u.MostSwitches)
			fmt.Fprintf(&b, " (most switches %s)", f)
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return fmt.Sprintf("busiest threads in step %s (CPU-µs/delivered, voluntary switches/s; in a Go server the one with the most is sysmon):%s", s.Name, b.String())
}
