//go:build faults

package faults

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rooms-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, b := range []struct {
		pkg  string
		race bool
	}{
		{"rooms/gateway/cmd/gateway", true},
		{"rooms/worker/cmd/worker", true},
		// The broker stands in for Kafka; it is not under test.
		{"rooms/shared/cmd/devbroker", false},
	} {
		args := []string{"build", "-o", filepath.Join(dir, filepath.Base(b.pkg))}
		if b.race {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, b.pkg)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", b.pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	writeSummary()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one test's numbers for the summary file.
type result struct {
	Test         string             `json:"test"`
	Time         string             `json:"time"`
	Passed       bool               `json:"passed"`
	DurationS    float64            `json:"duration_s"`
	Sent         int                `json:"sent"`
	Acked        int                `json:"acked"`
	Unknown      int                `json:"unknown_outcomes"`
	GaveUp       int                `json:"gave_up"`
	Stored       int                `json:"stored"`
	DeadLetters  int                `json:"dead_letters"`
	Clients      int                `json:"clients"`
	Reconnects   int                `json:"reconnects"`
	RecoveryS    map[string]float64 `json:"recovery_s,omitempty"`
	Measurements map[string]float64 `json:"measurements,omitempty"`
}

var (
	resultsMu sync.Mutex
	results   = map[string]*result{}
)

// record returns the test's result entry and fills in pass/fail and the
// duration when the test ends.
func record(t *testing.T) *result {
	t.Helper()
	r := &result{Test: t.Name(), Time: time.Now().UTC().Format(time.RFC3339), RecoveryS: map[string]float64{}, Measurements: map[string]float64{}}
	start := time.Now()
	resultsMu.Lock()
	results[t.Name()] = r
	resultsMu.Unlock()
	t.Cleanup(func() {
		resultsMu.Lock()
		defer resultsMu.Unlock()
		r.Passed = !t.Failed()
		r.DurationS = round(time.Since(start).Seconds())
	})
	return r
}

func (r *result) recovery(name string, d time.Duration) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	r.RecoveryS[name] = round(d.Seconds())
}

func (r *result) measure(name string, v float64) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	r.Measurements[name] = round(v)
}

func round(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

// writeSummary writes .run/faults/summary.json under the repository root
// (the numbers docs/reliability.md quotes).
func writeSummary() {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "summary:", err)
		return
	}
	dir := filepath.Join(root, ".run", "faults")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "summary:", err)
		return
	}
	path := filepath.Join(dir, "summary.json")
	// A run of some tests (-run) updates their entries and keeps the
	// others' from earlier runs; each entry says when it ran.
	var old struct {
		Tests []*result `json:"tests"`
	}
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &old)
	}
	merged := map[string]*result{}
	for _, r := range old.Tests {
		merged[r.Test] = r
	}
	for name, r := range results {
		merged[name] = r
	}
	var list []*result
	for _, r := range merged {
		list = append(list, r)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Test < list[j].Test })
	b, _ := json.MarshalIndent(map[string]any{"tests": list}, "", "  ")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "summary:", err)
		return
	}
	fmt.Fprintln(os.Stderr, "fault suite summary:", path)
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.work above %s", dir)
		}
		dir = parent
	}
}
