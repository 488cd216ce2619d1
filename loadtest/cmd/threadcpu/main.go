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
	"cmp"
	"flag"
	"fmt"
	"io"
	"os"
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
	err := checkFlags(*d, *top)
	var groups []procstat.Group
	if err == nil {
		groups, err = parseProcs(flag.Args())
	}
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

// checkFlags refuses an interval or a thread count the report cannot use.
func checkFlags(d time.Duration, top int) error {
	switch {
	case d <= 0:
		return fmt.Errorf("-for %v: give a positive duration", d)
	case top < 1:
		return fmt.Errorf("-top %d: give at least 1", top)
	}
	return nil
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

// sampleAll reads every thread of every group's processes, by group name;
// a process or thread gone in between is skipped.
func sampleAll(groups []procstat.Group) map[string]map[int]procstat.Thread {
	out := map[string]map[int]procstat.Thread{}
	for _, g := range groups {
		out[g.Name] = g.Threads(true)
	}
	return out
}

// perSec is a count or a duration in ms over d, per second.
func perSec(n float64, d time.Duration) float64 { return n / d.Seconds() }

func report(w io.Writer, groups []procstat.Group, before, after map[string]map[int]procstat.Thread, d time.Duration, top int) {
	fmt.Fprintf(w, "CPU ms/s and voluntary context switches/s per thread over %v (the busiest %d of each process)\n", d, top)
	for _, g := range groups {
		threads := procstat.ThreadsUsed(before[g.Name], after[g.Name])
		var total time.Duration
		for _, t := range threads {
			total += t.CPUUsed
		}
		fmt.Fprintf(w, "%-10s %7.1f ms/s in %d threads\n", g.Name, perSec(ms(total), d), len(threads))
		for _, t := range threads[:min(top, len(threads))] {
			now := "in " + cmp.Or(t.Syscall, "?")
			if t.Syscall == "running" || t.Syscall == "none" {
				now = t.Syscall
			}
			fmt.Fprintf(w, "    tid %-7d %-16s %7.1f ms/s %7.0f switches/s  now %s\n",
				t.TID, t.Name, perSec(ms(t.CPUUsed), d), perSec(float64(t.Switches), d), now)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
