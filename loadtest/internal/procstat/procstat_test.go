package procstat_test

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"testing"
	"time"

	"rooms/loadtest/internal/procstat"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name string
		stat string
		want time.Duration
		ok   bool
	}{
		{"plain", "123 (gateway) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 1000 50", 3 * time.Second, true},
		{"name with spaces and parens", "7 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 1 2 0 0", 30 * time.Millisecond, true},
		{"truncated", "7 (x) R 1 2", 0, false},
		{"no name", "garbage", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := procstat.ParseStat([]byte(tt.stat))
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("ParseStat = %v, %v; want %v, ok %v", got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestParseIO(t *testing.T) {
	raw := "rchar: 2012\nwchar: 1004\nsyscr: 17\nsyscw: 9\nread_bytes: 0\nwrite_bytes: 4096\ncancelled_write_bytes: 0\n"
	got, err := procstat.ParseIO([]byte(raw))
	if err != nil || got != (procstat.IOCalls{Reads: 17, Writes: 9}) {
		t.Fatalf("ParseIO = %+v, %v", got, err)
	}
	if _, err := procstat.ParseIO([]byte("rchar: 1\n")); err == nil {
		t.Fatal("ParseIO without syscr and syscw: no error")
	}
	// Another user's process, or one gone: an error, not zeros.
	if _, err := procstat.ReadIO(1 << 30); err == nil {
		t.Fatal("ReadIO of a pid that does not exist: no error")
	}
}

func TestParseMachine(t *testing.T) {
	// A real first line (two guest fields, already counted in user and
	// nice, so left out of the total), then the per-CPU lines.
	raw := "cpu  1000 20 300 5000 40 6 7 80 11 0\ncpu0 500 10 150 2500 20 3 3 40 5 0\nintr 123\n"
	got, err := procstat.ParseMachine([]byte(raw))
	want := procstat.MachineCPU{Total: 1000 + 20 + 300 + 5000 + 40 + 6 + 7 + 80, Idle: 5000 + 40, Steal: 80}
	if err != nil || got != want {
		t.Fatalf("ParseMachine = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{"", "intr 1 2 3\n", "cpu  1 2 3\n", "cpu  1 2 3 x 5 6 7 8\n"} {
		if _, err := procstat.ParseMachine([]byte(bad)); err == nil {
			t.Errorf("ParseMachine(%q): no error", bad)
		}
	}
}

func TestMachineSince(t *testing.T) {
	before := procstat.MachineCPU{Total: 1000, Idle: 600, Steal: 10}
	// 400 ticks pass: 100 idle or waiting, 20 stolen, 280 busy.
	after := procstat.MachineCPU{Total: 1400, Idle: 700, Steal: 30}
	u, ok := after.Since(before)
	if !ok || u.BusyPercent != 70 || u.StealPercent != 5 {
		t.Fatalf("Since = %+v, %v; want 70 %% busy, 5 %% steal", u, ok)
	}
	if _, ok := before.Since(before); ok {
		t.Fatal("Since with no time between the readings: ok")
	}
	// iowait (in Idle) stepped back by 50 ticks while 400 passed: the idle
	// share counts as none (100 % busy), never as a wrapped counter.
	back := procstat.MachineCPU{Total: 1400, Idle: 550, Steal: 10}
	if u, ok := back.Since(before); !ok || u.BusyPercent != 100 || u.StealPercent != 0 {
		t.Fatalf("Since with Idle gone back = %+v, %v; want 100 %% busy, 0 %% steal", u, ok)
	}
	// Steal gone back counts as no steal, not as a wrapped counter.
	stealBack := procstat.MachineCPU{Total: 1400, Idle: 800, Steal: 5}
	if u, ok := stealBack.Since(before); !ok || u.BusyPercent != 50 || u.StealPercent != 0 {
		t.Fatalf("Since with Steal gone back = %+v, %v; want 50 %% busy, 0 %% steal", u, ok)
	}
}

func TestReadMachineSeesABusyCPU(t *testing.T) {
	// One goroutine spins for 300 ms on a locked thread: one CPU of
	// NumCPU fully busy, so the machine is at least 1/NumCPU busy, more
	// with whatever else runs. Half of that leaves room for the kernel's
	// tick-based accounting.
	before, err := procstat.ReadMachine()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		}
		close(done)
	}()
	<-done
	after, err := procstat.ReadMachine()
	if err != nil {
		t.Fatal(err)
	}
	u, ok := after.Since(before)
	if !ok {
		t.Fatalf("no CPU time passed between %+v and %+v", before, after)
	}
	if floor := 50.0 / float64(runtime.NumCPU()); u.BusyPercent < floor || u.BusyPercent > 100 {
		t.Fatalf("machine %.1f %% busy while one of %d CPUs spun: want %.1f to 100", u.BusyPercent, runtime.NumCPU(), floor)
	}
}

func TestParseRSS(t *testing.T) {
	status := "Name:\tgateway\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t7\n"
	if got := procstat.ParseRSS([]byte(status)); got != 2048<<10 {
		t.Fatalf("ParseRSS = %d", got)
	}
	if got := procstat.ParseRSS([]byte("Name:\tkthreadd\n")); got != 0 {
		t.Fatalf("ParseRSS without VmRSS = %d", got)
	}
}

func TestReadSelfAndSampler(t *testing.T) {
	s, err := procstat.Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 {
		t.Fatalf("own RSS = %d", s.RSS)
	}
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/me.pid", []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	groups := []procstat.Group{{Name: "self", PIDs: []int{os.Getpid()}}}
	smp := procstat.NewSampler(groups, 10*time.Millisecond)
	smp.Begin()
	// Burn 50 ms of CPU on one thread, measured by the process's own CPU
	// time, not the clock.
	start, _ := procstat.Read(os.Getpid())
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		x := 0
		for now := start; now.CPU-start.CPU < 50*time.Millisecond; now, _ = procstat.Read(os.Getpid()) {
			for i := range 1_000_000 {
				x += i
			}
		}
		_ = x
	}()
	// 500 write calls and 500 read calls, each one system call: /dev/null
	// and /dev/zero are not pollable, so os.File calls the kernel at once.
	devNull, err := os.OpenFile("/dev/null", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	devZero, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer devZero.Close()
	one := make([]byte, 1)
	for range 500 {
		if _, err := devNull.Write(one); err != nil {
			t.Fatal(err)
		}
		if _, err := devZero.Read(one); err != nil {
			t.Fatal(err)
		}
	}
	// 200 sleeps of a locked thread: each parks the thread in the kernel
	// until its timer fires, one voluntary switch.
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for range 200 {
			time.Sleep(100 * time.Microsecond)
		}
	}()
	u := smp.End()["self"]
	if u.CPUSeconds < 0.05 || u.PeakRSS <= 0 {
		t.Fatalf("usage = %+v", u)
	}
	// The calls above are counted (with whatever else the process read and
	// wrote meanwhile, such as /proc).
	if u.IO == nil || u.IO.Writes < 500 || u.IO.Reads < 500 {
		t.Fatalf("I/O calls = %+v, want at least 500 reads and 500 writes", u.IO)
	}
	// The burning thread leads the busiest threads, which are sorted and
	// at most BusiestThreads.
	if len(u.Threads) == 0 || len(u.Threads) > procstat.BusiestThreads || u.Threads[0].CPUSeconds < 0.03 {
		t.Fatalf("busiest threads %+v", u.Threads)
	}
	for i := 1; i < len(u.Threads); i++ {
		if u.Threads[i].CPUSeconds > u.Threads[i-1].CPUSeconds {
			t.Fatalf("busiest threads not sorted: %+v", u.Threads)
		}
	}
	// The thread that switched most switched at least as often as any of
	// the busiest.
	if u.MostSwitches == nil {
		t.Fatal("no thread with the most switches")
	}
	for _, th := range u.Threads {
		if th.Switches > u.MostSwitches.Switches {
			t.Fatalf("thread %+v switched more than the most switching one %+v", th, *u.MostSwitches)
		}
	}
	// All threads' switches: the sleeps above and at least those of the
	// most switching thread.
	if u.Switches < 200 || u.Switches < u.MostSwitches.Switches {
		t.Fatalf("switches of all threads = %d, want at least 200 and at least the most switching thread's %d", u.Switches, u.MostSwitches.Switches)
	}
	found := false
	for _, g := range procstat.StackGroups(dir) {
		if g.Name == "me" {
			found = true
		}
	}
	if !found {
		t.Fatal("StackGroups ignored a pid file of a live process")
	}
}

func TestMatchingFindsProcessesByCommandLine(t *testing.T) {
	// A child with a command line no other process has.
	arg := fmt.Sprintf("%d.%d", 1000+os.Getpid()%1000, time.Now().UnixNano()%1_000_000)
	cmd := exec.Command("sleep", arg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	re := regexp.MustCompile(`^(/usr/bin/)?sleep ` + regexp.QuoteMeta(arg) + `$`)
	// Start returns once the child's exec has begun; its new command line
	// is readable a moment later (until then /proc shows an empty one), so
	// this waits for it, at most 10 s.
	got := procstat.Matching(re)
	for deadline := time.Now().Add(10 * time.Second); len(got) == 0 && time.Now().Before(deadline); got = procstat.Matching(re) {
		time.Sleep(5 * time.Millisecond)
	}
	if !slices.Equal(got, []int{cmd.Process.Pid}) {
		t.Fatalf("Matching(%s) = %v, want [%d]", re, got, cmd.Process.Pid)
	}
	// Arguments are joined by spaces, and this process is never listed,
	// even when it matches.
	if got := procstat.Matching(regexp.MustCompile(`^(/usr/bin/)?sleep [0-9.]+$`)); !slices.Contains(got, cmd.Process.Pid) {
		t.Fatalf("a pattern over the joined arguments missed the child: %v", got)
	}
	if got := procstat.Matching(regexp.MustCompile(`.`)); slices.Contains(got, os.Getpid()) || !slices.Contains(got, cmd.Process.Pid) {
		t.Fatalf("Matching(.) = %v: must hold the child and not this process (%d)", got, os.Getpid())
	}

	g := procstat.Group{Name: "sleep", Pattern: re}
	smp := procstat.NewSampler([]procstat.Group{g}, time.Hour)
	if rss := smp.RSS()["sleep"]; rss <= 0 {
		t.Fatalf("RSS of the matched child = %d", rss)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if got := procstat.Matching(re); len(got) != 0 {
		t.Fatalf("Matching after the child exited = %v", got)
	}
}
