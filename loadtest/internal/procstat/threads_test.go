package procstat_test

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"rooms/loadtest/internal/procstat"
)

func TestParsesThreadFiles(t *testing.T) {
	stat := []byte("4242 (rdk:broker 0) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 9 0 100 0 0")
	if got := procstat.StatName(stat); got != "rdk:broker 0" {
		t.Errorf("StatName %q, want %q", got, "rdk:broker 0")
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
		if got := procstat.SyscallName([]byte(in)); got != want {
			t.Errorf("SyscallName(%q) = %q, want %q", in, got, want)
		}
	}
}

// A thread that burns CPU between two readings of this process is found
// with the CPU it used in between (not before), and the threads come
// busiest first.
func TestThreadsUsedFindsTheBusyThread(t *testing.T) {
	pid := os.Getpid()
	tids := make(chan int)
	done := make(chan struct{})
	before := make(chan map[int]procstat.Thread)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid := syscall.Gettid()
		// Burn until this thread's own CPU time (not the clock) has grown
		// by d since from.
		burn := func(from procstat.Thread, d time.Duration) {
			for procstat.ReadThreads(pid, false)[tid].CPU-from.CPU < d {
				for i := 0; i < 1_000_000; i++ {
					_ = i * i
				}
			}
		}
		// Some CPU before the first reading, which the interval must not count.
		burn(procstat.Thread{}, 30*time.Millisecond)
		tids <- tid
		start := <-before
		burn(start[tid], 50*time.Millisecond)
		close(done)
	}()
	tid := <-tids
	b := procstat.ReadThreads(pid, true)
	if _, ok := b[tid]; !ok {
		t.Fatalf("thread %d not among %v", tid, b)
	}
	before <- b
	<-done
	a := procstat.ReadThreads(pid, false)
	threads := procstat.ThreadsUsed(b, a)
	var busy *procstat.ThreadUse
	for i := range threads {
		if i > 0 && threads[i].CPUUsed > threads[i-1].CPUUsed {
			t.Errorf("threads not busiest first: %v after %v", threads[i].CPUUsed, threads[i-1].CPUUsed)
		}
		if threads[i].TID == tid {
			busy = &threads[i]
		}
	}
	if busy == nil {
		t.Fatalf("thread %d missing from %+v", tid, threads)
	}
	if busy.CPUUsed < 50*time.Millisecond {
		t.Errorf("busy thread used %v, want at least 50ms", busy.CPUUsed)
	}
	if busy.CPUUsed > a[tid].CPU-30*time.Millisecond {
		t.Errorf("busy thread %v in the interval of its %v in all, 30ms of them before it", busy.CPUUsed, a[tid].CPU)
	}
	// Reading what a thread waits in needs ptrace rights: where the file
	// can be read, the reading must name it.
	if sc, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid)); err == nil && len(sc) > 0 && b[tid].Syscall == "" {
		t.Errorf("a reading with system calls left thread %d's empty", tid)
	}
	if a[tid].Syscall != "" {
		t.Errorf("a reading without system calls has %q for thread %d", a[tid].Syscall, tid)
	}
}
