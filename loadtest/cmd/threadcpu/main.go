// Command threadcpu shows where processes spend their CPU, thread by
// thread. Over an interval it samples every thread's CPU time (utime +
// stime) and voluntary context switches from /proc/<pid>/task/*, then
// prints each process's total and its busiest threads, with the thread's
// name and what it was doing at the end (running, or the system call it
// waited in). In a Go process every thread has the program's name; the
// runtime's sysmon is the one with thousands of voluntary switches a
// second under load, napping in nanosleep or sleeping in futex until woken
// (docs/performance.md, "What holds the rest back").
//
// Run it beside a benchmark step:
//
//	go run ./loadtest/cmd/threadcpu -for 12s -stack       # the processes of .run/pid
//	go run ./loadtest/cmd/threadcpu -for 12s gateway-1=4242 worker-1=4250
package main

import (
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"rooms/loadtest/internal/procstat"
)

func main() {
	d := flag.Duration("for", 10*time.Second, "how long to sample")
	top := flag.Int("top", 5, "threads to show per process")
	stack := flag.Bool("stack", false, "sample every process of the local stack (.run/pid/*.pid)")
	flag.Parse()
	procs, err := parseProcs(flag.Args())
	if err == nil && *stack {
		var more []proc
		more, err = stackProcs(".run/pid")
		procs = append(procs, more...)
	}
	if err == nil && len(procs) == 0 {
		err = fmt.Errorf("no processes: give name=pid arguments or -stack")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "threadcpu:", err)
		os.Exit(2)
	}
	before := sampleAll(procs)
	time.Sleep(*d)
	after := sampleAll(procs)
	report(os.Stdout, procs, before, after, *d, *top)
}

// proc is a process to sample.
type proc struct {
	Name string
	PID  int
}

func parseProcs(args []string) ([]proc, error) {
	var out []proc
	for _, a := range args {
		name, p, ok := strings.Cut(a, "=")
		pid, err := strconv.Atoi(p)
		if !ok || err != nil || pid <= 0 {
			return nil, fmt.Errorf("argument %q is not name=pid", a)
		}
		out = append(out, proc{Name: name, PID: pid})
	}
	return out, nil
}

// stackProcs reads the pid files the local stack writes (scripts/stack.sh).
func stackProcs(dir string) ([]proc, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.pid"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no pid files in %s: is the stack up (go tool task up)?", dir)
	}
	var out []proc
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, proc{Name: strings.TrimSuffix(filepath.Base(f), ".pid"), PID: pid})
	}
	return out, nil
}

// thread is one reading of a thread.
type thread struct {
	TID       int
	Name      string
	CPU       time.Duration
	Voluntary int64
	Syscall   string // the system call it waited in when read, "running" or "none"
}

// sampleAll reads every thread of every process; a process or thread gone
// in between is skipped.
func sampleAll(procs []proc) map[int]map[int]thread {
	out := map[int]map[int]thread{}
	for _, p := range procs {
		out[p.PID] = sampleProc(fmt.Sprintf("/proc/%d/task", p.PID))
	}
	return out
}

func sampleProc(taskDir string) map[int]thread {
	out := map[int]thread{}
	entries, err := os.ReadDir(taskDir)
	if err != nil {
		return out
	}
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join(taskDir, e.Name())
		stat, err1 := os.ReadFile(filepath.Join(dir, "stat"))
		status, err2 := os.ReadFile(filepath.Join(dir, "status"))
		if err1 != nil || err2 != nil {
			continue
		}
		cpu, err := procstat.ParseStat(stat)
		if err != nil {
			continue
		}
		sc, _ := os.ReadFile(filepath.Join(dir, "syscall")) // needs ptrace rights; empty without
		out[tid] = thread{TID: tid, Name: statName(stat), CPU: cpu, Voluntary: voluntary(status), Syscall: syscallName(sc)}
	}
	return out
}

// statName is the thread name between the parentheses of a stat line.
func statName(stat []byte) string {
	i, j := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
	if i < 0 || j < i {
		return "?"
	}
	return string(stat[i+1 : j])
}

// voluntary is voluntary_ctxt_switches of a status file (0 when absent).
func voluntary(status []byte) int64 {
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("voluntary_ctxt_switches:")); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(rest)), 10, 64)
			return n
		}
	}
	return 0
}

// syscallNames are the x86-64 system calls server threads wait in.
var syscallNames = map[string]string{
	"0": "read", "1": "write", "7": "poll", "23": "select", "35": "nanosleep", "45": "recvfrom",
	"47": "recvmsg", "202": "futex", "230": "clock_nanosleep", "232": "epoll_wait", "271": "ppoll",
	"281": "epoll_pwait", "441": "epoll_pwait2",
}

// syscallName names the first field of /proc/<pid>/task/<tid>/syscall: a
// system call number, "running", or -1 (in no system call).
func syscallName(b []byte) string {
	f := strings.Fields(string(b))
	switch {
	case len(f) == 0:
		return ""
	case f[0] == "-1":
		return "none"
	}
	if n, ok := syscallNames[f[0]]; ok {
		return n
	}
	return f[0]
}

// usage is one thread's use over the interval.
type usage struct {
	thread
	MsPerSec, SwitchesPerSec float64
}

// diff returns the threads alive at both readings, busiest first.
func diff(before, after map[int]thread, d time.Duration) (threads []usage, totalMsPerSec float64) {
	for tid, a := range after {
		b, ok := before[tid]
		if !ok {
			b = thread{} // started in between: all of its time is in the interval
		}
		u := usage{thread: a,
			MsPerSec:       float64(a.CPU-b.CPU) / float64(time.Millisecond) / d.Seconds(),
			SwitchesPerSec: float64(a.Voluntary-b.Voluntary) / d.Seconds()}
		totalMsPerSec += u.MsPerSec
		threads = append(threads, u)
	}
	sort.Slice(threads, func(i, j int) bool {
		if threads[i].MsPerSec != threads[j].MsPerSec {
			return threads[i].MsPerSec > threads[j].MsPerSec
		}
		return threads[i].SwitchesPerSec > threads[j].SwitchesPerSec
	})
	return threads, totalMsPerSec
}

func report(w io.Writer, procs []proc, before, after map[int]map[int]thread, d time.Duration, top int) {
	fmt.Fprintf(w, "CPU ms/s and voluntary context switches/s per thread over %v (the busiest %d of each process)\n", d, top)
	for _, p := range procs {
		threads, total := diff(before[p.PID], after[p.PID], d)
		fmt.Fprintf(w, "%-10s pid %-7d %7.1f ms/s in %d threads\n", p.Name, p.PID, total, len(threads))
		for _, t := range threads[:min(top, len(threads))] {
			now := "in " + cmp.Or(t.Syscall, "?")
			if t.Syscall == "running" || t.Syscall == "none" {
				now = t.Syscall
			}
			fmt.Fprintf(w, "    tid %-7d %-16s %7.1f ms/s %7.0f switches/s  now %s\n",
				t.TID, t.Name, t.MsPerSec, t.SwitchesPerSec, now)
		}
	}
}
