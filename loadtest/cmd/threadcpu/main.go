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
	"maps"
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
	groups, err := parseProcs(flag.Args())
	if err == nil && *stack {
		var more []procstat.Group
		more, err = stackGroups(".run/pid")
		groups = append(groups, more...)
	}
	if err == nil && len(groups) == 0 {
		err = fmt.Errorf("no processes: give name=pid arguments or -stack")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "threadcpu:", err)
		os.Exit(2)
	}
	before := sampleAll(groups)
	time.Sleep(*d)
	after := sampleAll(groups)
	report(os.Stdout, groups, before, after, *d, *top)
}

// parseProcs reads name=pid arguments, a group of one process each.
func parseProcs(args []string) ([]procstat.Group, error) {
	var out []procstat.Group
	for _, a := range args {
		name, p, ok := strings.Cut(a, "=")
		pid, err := strconv.Atoi(p)
		if !ok || err != nil || pid <= 0 {
			return nil, fmt.Errorf("argument %q is not name=pid", a)
		}
		out = append(out, procstat.Group{Name: name, PIDs: []int{pid}})
	}
	return out, nil
}

// stackGroups is the processes of the local stack's pid files
// (scripts/stack.sh), found as the benchmark finds them
// (procstat.StackGroups), or an error when none of them runs.
func stackGroups(dir string) ([]procstat.Group, error) {
	var out []procstat.Group
	for _, g := range procstat.StackGroups(dir) {
		if g.PIDFile != "" {
			out = append(out, g)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no running process has a pid file in %s: is the stack up (go tool task up)?", dir)
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

// sampleAll reads every thread of every group's processes, by group name;
// a process or thread gone in between is skipped.
func sampleAll(groups []procstat.Group) map[string]map[int]thread {
	out := map[string]map[int]thread{}
	for _, g := range groups {
		threads := map[int]thread{}
		for _, pid := range g.Current() {
			maps.Copy(threads, sampleProc(fmt.Sprintf("/proc/%d/task", pid)))
		}
		out[g.Name] = threads
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
		out[tid] = thread{TID: tid, Name: statName(stat), CPU: cpu, Voluntary: procstat.StatusValue(status, "voluntary_ctxt_switches"), Syscall: syscallName(sc)}
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

func report(w io.Writer, groups []procstat.Group, before, after map[string]map[int]thread, d time.Duration, top int) {
	fmt.Fprintf(w, "CPU ms/s and voluntary context switches/s per thread over %v (the busiest %d of each process)\n", d, top)
	for _, g := range groups {
		threads, total := diff(before[g.Name], after[g.Name], d)
		fmt.Fprintf(w, "%-10s %7.1f ms/s in %d threads\n", g.Name, total, len(threads))
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
