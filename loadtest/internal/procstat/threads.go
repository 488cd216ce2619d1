package procstat

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Thread is one reading of a thread from /proc/<pid>/task/<tid>.
type Thread struct {
	TID       int
	Name      string // the thread's name; in a Go process every thread has the program's
	CPU       time.Duration
	Voluntary int64 // voluntary context switches so far
	// Syscall is the system call it waited in when read ("running",
	// "none" outside one); empty unless asked for.
	Syscall string
}

// ReadThreads reads every thread of pid; a thread gone in between is
// skipped. withSyscall also reads what each thread waits in, which needs
// ptrace rights and makes the kernel wait until a running thread is off
// its CPU, so samplers of running benchmarks leave it out.
func ReadThreads(pid int, withSyscall bool) map[int]Thread {
	taskDir := fmt.Sprintf("/proc/%d/task", pid)
	out := map[int]Thread{}
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
		cpu, err := ParseStat(stat)
		if err != nil {
			continue
		}
		t := Thread{TID: tid, Name: StatName(stat), CPU: cpu, Voluntary: StatusValue(status, "voluntary_ctxt_switches")}
		if withSyscall {
			sc, _ := os.ReadFile(filepath.Join(dir, "syscall")) // empty without ptrace rights
			t.Syscall = SyscallName(sc)
		}
		out[tid] = t
	}
	return out
}

// StatName is the name between the parentheses of a stat line (it may
// hold spaces and parentheses itself).
func StatName(stat []byte) string {
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

// SyscallName names the first field of /proc/<pid>/task/<tid>/syscall: a
// system call number, "running", or -1 (in no system call).
func SyscallName(b []byte) string {
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

// ThreadUse is what one thread used between two readings.
type ThreadUse struct {
	Thread
	CPUUsed  time.Duration
	Switches int64 // voluntary context switches in the interval
}

// ThreadsUsed returns the threads alive at the second reading with what
// they used since the first, busiest first (a thread started in between
// counts all of its time).
func ThreadsUsed(before, after map[int]Thread) []ThreadUse {
	var out []ThreadUse
	for tid, a := range after {
		b := before[tid] // zero when it started in between
		out = append(out, ThreadUse{Thread: a, CPUUsed: max(0, a.CPU-b.CPU), Switches: max(0, a.Voluntary-b.Voluntary)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].CPUUsed != out[j].CPUUsed {
			return out[i].CPUUsed > out[j].CPUUsed
		}
		if out[i].Switches != out[j].Switches {
			return out[i].Switches > out[j].Switches
		}
		return out[i].TID < out[j].TID
	})
	return out
}
