package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"rooms/loadtest/internal/procstat"
)

func TestParsesProcFiles(t *testing.T) {
	stat := []byte("4242 (rdk:broker 0) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 9 0 100 0 0")
	if got := statName(stat); got != "rdk:broker 0" {
		t.Errorf("statName %q, want %q", got, "rdk:broker 0")
	}
	status := []byte("Name:\tgateway\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\t3376\nnonvoluntary_ctxt_switches:\t12\n")
	if got := procstat.StatusValue(status, "voluntary_ctxt_switches"); got != 3376 {
		t.Errorf("voluntary switches %d, want 3376", got)
	}
	for in, want := range map[string]string{
		"35 0x0 0x7ffd 0x0 0x0 0x0 0x0 0x7ffd 0x46a3e3":   "nanosleep",
		"202 0xc000 0x80 0x0 0x0 0x0 0x0 0x7ffd 0x46a3e3": "futex",
		"999 0x0":   "999",
		"-1 0x7ffd": "none",
		"running":   "running",
		"":          "",
	} {
		if got := syscallName([]byte(in)); got != want {
			t.Errorf("syscallName(%q) = %q, want %q", in, got, want)
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

// A thread that burns CPU between two samples of this process is found,
// with the CPU it used, and the threads come busiest first.
func TestFindsTheBusyThread(t *testing.T) {
	taskDir := fmt.Sprintf("/proc/%d/task", os.Getpid())
	tids := make(chan int)
	done := make(chan struct{})
	before := make(chan map[int]thread)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid := syscall.Gettid()
		// Burn until this thread's own CPU time (not the clock) has grown
		// by d since from.
		burn := func(from thread, d time.Duration) {
			for sampleProc(taskDir)[tid].CPU-from.CPU < d {
				for i := 0; i < 1_000_000; i++ {
					_ = i * i
				}
			}
		}
		// Some CPU before the first sample, which the interval must not count.
		burn(thread{}, 30*time.Millisecond)
		tids <- tid
		start := <-before
		burn(start[tid], 50*time.Millisecond)
		close(done)
	}()
	tid := <-tids
	b := sampleProc(taskDir)
	if _, ok := b[tid]; !ok {
		t.Fatalf("thread %d not among %v", tid, b)
	}
	before <- b
	<-done
	a := sampleProc(taskDir)
	// A one-second interval makes ms/s equal the ms used.
	threads, total := diff(b, a, time.Second)
	var busy *usage
	for i := range threads {
		if i > 0 && threads[i].MsPerSec > threads[i-1].MsPerSec {
			t.Errorf("threads not busiest first: %.1f after %.1f ms/s", threads[i].MsPerSec, threads[i-1].MsPerSec)
		}
		if threads[i].TID == tid {
			busy = &threads[i]
		}
	}
	if busy == nil {
		t.Fatalf("thread %d missing from %+v", tid, threads)
	}
	if busy.MsPerSec < 50 || total < busy.MsPerSec {
		t.Errorf("busy thread %.1f ms, process %.1f ms; want at least 50 and the process at least the thread", busy.MsPerSec, total)
	}
	if all := float64(a[tid].CPU) / float64(time.Millisecond); busy.MsPerSec > all-30 {
		t.Errorf("busy thread %.1f ms in the interval of its %.1f ms in all, 30 of them before it", busy.MsPerSec, all)
	}
	var out strings.Builder
	self := []procstat.Group{{Name: "self", PIDs: []int{os.Getpid()}}}
	report(&out, self, map[string]map[int]thread{"self": b}, map[string]map[int]thread{"self": a}, time.Second, len(threads))
	if !strings.Contains(out.String(), fmt.Sprintf("tid %-7d", tid)) {
		t.Errorf("report does not show the busy thread:\n%s", out.String())
	}
}
