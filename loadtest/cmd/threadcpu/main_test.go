package main

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"rooms/loadtest/internal/procstat"
)

func TestParsesArguments(t *testing.T) {
	for _, c := range []struct {
		d   time.Duration
		top int
		ok  bool
	}{{10 * time.Second, 5, true}, {0, 5, false}, {-time.Second, 5, false}, {time.Second, 0, false}, {time.Second, -1, false}} {
		if err := checkFlags(c.d, c.top); (err == nil) != c.ok {
			t.Errorf("checkFlags(%v, %d) = %v", c.d, c.top, err)
		}
	}
	if _, err := parseProcs([]string{"gateway-1=12", "worker"}); err == nil {
		t.Error("parseProcs accepted an argument without =pid")
	}
	if ps, err := parseProcs([]string{"gateway-1=12"}); err != nil || len(ps) != 1 || ps[0].Name != "gateway-1" || !slices.Equal(ps[0].Current(), []int{12}) {
		t.Errorf("parseProcs = %v, %v", ps, err)
	}
}

func TestStackGroupsReadPIDFiles(t *testing.T) {
	dir := t.TempDir()
	self := strconv.Itoa(os.Getpid())
	for name, pid := range map[string]string{"gateway-1": self + "\n", "worker-1": self} {
		if err := os.WriteFile(dir+"/"+name+".pid", []byte(pid), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	gs, err := stackGroups(dir)
	if err != nil || len(gs) != 2 || gs[0].Name != "gateway-1" || gs[1].Name != "worker-1" ||
		!slices.Equal(gs[0].Current(), []int{os.Getpid()}) || !slices.Equal(gs[1].Current(), []int{os.Getpid()}) {
		t.Fatalf("stackGroups = %+v, %v", gs, err)
	}
	if _, err := stackGroups(t.TempDir()); err == nil {
		t.Fatal("stackGroups of an empty folder: no error")
	}
}

// The report shows a process's threads, the busiest first, with their
// CPU and switches per second.
func TestReportShowsBusiestThreadsFirst(t *testing.T) {
	before := map[int]procstat.Thread{
		10: {TID: 10, Name: "gateway", CPU: 100 * time.Millisecond, Voluntary: 5},
		11: {TID: 11, Name: "gateway", CPU: 0, Voluntary: 0},
	}
	after := map[int]procstat.Thread{
		10: {TID: 10, Name: "gateway", CPU: 120 * time.Millisecond, Voluntary: 25, Syscall: "futex"},
		11: {TID: 11, Name: "gateway", CPU: 80 * time.Millisecond, Voluntary: 4000, Syscall: "nanosleep"},
		12: {TID: 12, Name: "rdk:broker1", CPU: 10 * time.Millisecond, Voluntary: 10, Syscall: "running"},
	}
	var out strings.Builder
	g := []procstat.Group{{Name: "gateway-1", PIDs: []int{1}}}
	report(&out, g, map[string]map[int]procstat.Thread{"gateway-1": before},
		map[string]map[int]procstat.Thread{"gateway-1": after}, 2*time.Second, 2)
	want := "CPU ms/s and voluntary context switches/s per thread over 2s (the busiest 2 of each process)\n" +
		"gateway-1     55.0 ms/s in 3 threads\n" +
		"    tid 11      gateway             40.0 ms/s    2000 switches/s  now in nanosleep\n" +
		"    tid 10      gateway             10.0 ms/s      10 switches/s  now in futex\n"
	if out.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", out.String(), want)
	}
}
