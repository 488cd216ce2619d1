// Package procstat samples the CPU time and resident memory of the server
// processes from /proc: CPU seconds over an interval, peak RSS, the read
// and write calls each made, and the CPU and wake-ups of each process's
// busiest threads.
package procstat

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// Group is a named set of processes measured together (e.g. every
// PostgreSQL backend as "postgres").
type Group struct {
	Name string
	PIDs []int
	// PIDFile, when set, is read at each sample (a restarted process is
	// followed).
	PIDFile string
	// Pattern, when set, is matched against every process's command line
	// (its arguments joined by spaces, as pgrep -f sees it) at each sample,
	// for groups whose processes come and go (PostgreSQL backends).
	Pattern *regexp.Regexp
}

// Sample is one reading of a group.
type Sample struct {
	CPU time.Duration // utime+stime summed over the group's live processes
	RSS int64         // VmRSS summed, bytes
}

// Read reads /proc for one pid.
func Read(pid int) (Sample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Sample{}, err
	}
	cpu, err := ParseStat(stat)
	if err != nil {
		return Sample{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Sample{}, err
	}
	return Sample{CPU: cpu, RSS: ParseRSS(status)}, nil
}

// ParseStat returns utime+stime of a /proc/<pid>/stat line. The command name
// (field 2) may hold spaces and parentheses, so fields are counted after its
// last ')'.
func ParseStat(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat")
	}
	fields := strings.Fields(string(stat[i+1:]))
	// After the name: state(3) ppid(4) … utime(14) stime(15).
	if len(fields) < 13 {
		return 0, fmt.Errorf("malformed stat: %d fields", len(fields))
	}
	ut, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed stat times")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// ParseRSS returns VmRSS in bytes from /proc/<pid>/status (0 when absent,
// as for kernel threads and zombies).
func ParseRSS(status []byte) int64 {
	return StatusValue(status, "VmRSS") << 10
}

// StatusValue returns the number of field key ("VmRSS",
// "voluntary_ctxt_switches", …) in a /proc status file, without its unit
// (0 when absent).
func StatusValue(status []byte, key string) int64 {
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(name) != key {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		return n
	}
	return 0
}

// Current returns the group's processes now (its pid file read again, or
// its pattern matched again).
func (g Group) Current() []int {
	switch {
	case g.PIDFile != "":
		raw, err := os.ReadFile(g.PIDFile)
		if err != nil {
			return nil
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil {
			return nil
		}
		return []int{pid}
	case g.Pattern != nil:
		return Matching(g.Pattern)
	}
	return g.PIDs
}

// Matching lists the pids, other than this process, whose command line (its
// arguments joined by spaces) re matches, ascending. It reads /proc itself:
// running pgrep twice a sample cost the load generator a few % of a core.
func Matching(re *regexp.Regexp) []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	self := os.Getpid()
	buf := make([]byte, 4096)
	var pids []int
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid == self {
			continue
		}
		if cmd := cmdline(name, buf); cmd != "" && re.MatchString(cmd) {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

// cmdline returns the first len(buf) bytes of /proc/<pid>/cmdline with its
// NUL separators as spaces ("" for kernel threads, zombies and processes
// gone).
func cmdline(pid string, buf []byte) string {
	f, err := os.Open("/proc/" + pid + "/cmdline")
	if err != nil {
		return ""
	}
	n, _ := f.Read(buf)
	f.Close()
	b := bytes.TrimRight(buf[:n], "\x00")
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// read sums a group; processes that vanished are skipped.
func (g Group) read() Sample {
	return sum(g.Current())
}

// sum sums the readings of pids; processes that vanished are skipped.
func sum(pids []int) Sample {
	var s Sample
	for _, pid := range pids {
		p, err := Read(pid)
		if err != nil {
			continue
		}
		s.CPU += p.CPU
		s.RSS += p.RSS
	}
	return s
}

// IOCalls counts a process's read and write system calls, from the
// syscr and syscw fields of /proc/<pid>/io (all its threads). The kernel
// counts read(2), write(2) and their vector and positioned forms there,
// whatever they read or wrote (a read that finds a socket empty counts
// too), but not send(2), recv(2), sendmsg(2) or recvmsg(2). So they hold
// every socket read and write of the Go code in the servers, the broker
// and Redis (and a few other reads and writes, such as the Go runtime's
// wake-ups of its poller), only the file I/O of PostgreSQL, and none of
// librdkafka's socket calls, which use sendmsg and recvmsg.
type IOCalls struct {
	Reads  int64 `json:"reads"`
	Writes int64 `json:"writes"`
}

// ReadIO reads the I/O call counts of one pid. /proc/<pid>/io is readable
// only by the process's owner (or root), so this fails for another user's
// processes.
func ReadIO(pid int) (IOCalls, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return IOCalls{}, err
	}
	return ParseIO(raw)
}

// ParseIO returns syscr and syscw of a /proc/<pid>/io file.
func ParseIO(raw []byte) (IOCalls, error) {
	if !bytes.Contains(raw, []byte("syscr:")) || !bytes.Contains(raw, []byte("syscw:")) {
		return IOCalls{}, fmt.Errorf("malformed io: no syscr or syscw")
	}
	return IOCalls{Reads: StatusValue(raw, "syscr"), Writes: StatusValue(raw, "syscw")}, nil
}

// sumIO sums the I/O call counts of pids; ok is false when none could be
// read (all gone, or all another user's).
func sumIO(pids []int) (c IOCalls, ok bool) {
	for _, pid := range pids {
		p, err := ReadIO(pid)
		if err != nil {
			continue
		}
		c.Reads += p.Reads
		c.Writes += p.Writes
		ok = true
	}
	return c, ok
}

// reading is what Begin and End read of a group.
type reading struct {
	Sample
	threads map[int]Thread
	io      IOCalls
	ioOK    bool
}

// readAll is read, Threads(false) and the I/O calls of the same processes,
// found once (a pattern group's look-up reads every process's command line).
func (g Group) readAll() reading {
	pids := g.Current()
	io, ok := sumIO(pids)
	return reading{Sample: sum(pids), threads: threadsOf(pids, false), io: io, ioOK: ok}
}

// StackGroups finds the local stack's processes: one group per pid file in
// dir (.run/pid: devbroker, gateway-N, worker-N, a proxy if any), plus
// PostgreSQL and Redis by command line.
func StackGroups(dir string) []Group {
	var groups []Group
	files, _ := filepath.Glob(filepath.Join(dir, "*.pid"))
	sort.Strings(files)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			continue
		}
		groups = append(groups, Group{Name: strings.TrimSuffix(filepath.Base(f), ".pid"), PIDFile: f})
	}
	groups = append(groups,
		// The machine's PostgreSQL cluster: its postmaster and every backend
		// ("postgres: 15/main: …"), not private test clusters.
		Group{Name: "postgres", Pattern: regexp.MustCompile(`^(/usr/lib/postgresql/[0-9]+/bin/postgres -D /var/lib/postgresql|postgres: [0-9]+/main:)`)},
		Group{Name: "redis", Pattern: regexp.MustCompile(`^(/usr/bin/)?redis-server 127\.0\.0\.1:6379`)},
	)
	return groups
}

// Usage is what a group used over an interval.
type Usage struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	// PeakRSS is the highest summed RSS sampled, in bytes.
	PeakRSS int64 `json:"peak_rss_bytes"`
	// EndRSS is the summed RSS at the end, in bytes.
	EndRSS int64 `json:"end_rss_bytes"`
	// Threads are the group's busiest threads over the interval (at most
	// BusiestThreads), busiest first.
	Threads []ThreadFigure `json:"busiest_threads,omitempty"`
	// MostSwitches is the thread that woke most often (voluntary context
	// switches) over the interval: in a Go server under load, the
	// runtime's sysmon, which need not be among the busiest.
	MostSwitches *ThreadFigure `json:"most_switches_thread,omitempty"`
	// Switches are the voluntary context switches of all the group's
	// threads over the interval: each a wake-up after the thread waited
	// for a socket, a lock or a timer; a message crossing to another
	// process costs one when the thread taking it was waiting. Threads
	// that ended during the interval are missing from it (Go's and
	// librdkafka's threads live as long as their process); 0 when no
	// thread could be read.
	Switches int64 `json:"voluntary_switches,omitempty"`
	// IO is the read and write calls the group made over the interval
	// (see IOCalls for which calls count); nil when /proc/<pid>/io could
	// not be read at both ends. For a group whose processes come and go
	// (PostgreSQL's backends), those that ended during the interval are
	// missing from it, as from CPUSeconds.
	IO *IOCalls `json:"io_calls,omitempty"`
}

// BusiestThreads is how many of a group's threads a Usage keeps: enough
// for a Go server's thread that runs its goroutines, the runtime's sysmon
// and the busiest threads of librdkafka.
const BusiestThreads = 4

// ThreadFigure is what one thread used over an interval.
type ThreadFigure struct {
	Name       string  `json:"name"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// Switches are its voluntary context switches: each a wake-up after
	// it waited (sysmon's naps show up here by the thousand a second).
	Switches int64 `json:"voluntary_switches"`
}

// threadFigures turns the threads' use into the figures a Usage keeps:
// the busiest threads, the one with the most switches (nil when none
// switched), and the switches of all of them.
func threadFigures(before, after map[int]Thread) (busiest []ThreadFigure, most *ThreadFigure, switches int64) {
	used := ThreadsUsed(before, after)
	fig := func(t ThreadUse) ThreadFigure {
		return ThreadFigure{Name: t.Name, CPUSeconds: t.CPUUsed.Seconds(), Switches: t.Switches}
	}
	busiest = make([]ThreadFigure, 0, min(len(used), BusiestThreads))
	for _, t := range used[:min(len(used), BusiestThreads)] {
		busiest = append(busiest, fig(t))
	}
	for _, t := range used { // busiest first: of equal switches, the busier wins
		switches += t.Switches
		if t.Switches > 0 && (most == nil || t.Switches > most.Switches) {
			f := fig(t)
			most = &f
		}
	}
	return busiest, most, switches
}

// Threads reads every thread of the group's processes now (see
// ReadThreads for withSyscall).
func (g Group) Threads(withSyscall bool) map[int]Thread {
	return threadsOf(g.Current(), withSyscall)
}

func threadsOf(pids []int, withSyscall bool) map[int]Thread {
	out := map[int]Thread{}
	for _, pid := range pids {
		maps.Copy(out, ReadThreads(pid, withSyscall))
	}
	return out
}

// Sampler measures groups over intervals: Begin starts one, End returns the
// usage since Begin. A background loop samples RSS for the peaks.
type Sampler struct {
	groups []Group
	every  time.Duration

	mu    sync.Mutex
	start map[string]reading // at Begin
	peak  map[string]int64
}

// NewSampler returns a sampler of groups sampling RSS every interval.
func NewSampler(groups []Group, every time.Duration) *Sampler {
	return &Sampler{groups: groups, every: every, start: map[string]reading{}, peak: map[string]int64{}}
}

// Groups are the sampled groups.
func (s *Sampler) Groups() []Group { return s.groups }

// Run samples RSS until ctx ends.
func (s *Sampler) Run(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, g := range s.groups {
			rss := g.read().RSS
			s.mu.Lock()
			s.peak[g.Name] = max(s.peak[g.Name], rss)
			s.mu.Unlock()
		}
	}
}

// Begin starts an interval.
func (s *Sampler) Begin() {
	for _, g := range s.groups {
		r := g.readAll()
		s.mu.Lock()
		s.start[g.Name] = r
		s.peak[g.Name] = r.RSS
		s.mu.Unlock()
	}
}

// End returns each group's usage since Begin.
func (s *Sampler) End() map[string]Usage {
	out := map[string]Usage{}
	for _, g := range s.groups {
		r := g.readAll()
		s.mu.Lock()
		st := s.start[g.Name]
		busiest, most, switches := threadFigures(st.threads, r.threads)
		u := Usage{
			CPUSeconds:   max(0, (r.CPU - st.CPU).Seconds()),
			PeakRSS:      max(s.peak[g.Name], r.RSS),
			EndRSS:       r.RSS,
			Threads:      busiest,
			MostSwitches: most,
			Switches:     switches,
		}
		if st.ioOK && r.ioOK {
			u.IO = &IOCalls{Reads: max(0, r.io.Reads-st.io.Reads), Writes: max(0, r.io.Writes-st.io.Writes)}
		}
		out[g.Name] = u
		s.mu.Unlock()
	}
	return out
}

// RSS returns each group's current summed RSS.
func (s *Sampler) RSS() map[string]int64 {
	out := map[string]int64{}
	for _, g := range s.groups {
		out[g.Name] = g.read().RSS
	}
	return out
}

// MachineCPU is the whole machine's CPU time so far, from the first line
// of /proc/stat, in clock ticks summed over its CPUs.
type MachineCPU struct {
	// Total is every state but the guest ones (already in user and nice).
	Total uint64
	// Idle is idle plus iowait: time a CPU had nothing to run.
	Idle uint64
	// Steal is time the hypervisor gave a vCPU's turn to someone else.
	Steal uint64
}

// MachineUsage is how busy the machine's CPUs were over an interval, in
// percent of all their time: Busy counts every state but idle, iowait and
// steal, so 100 means no CPU had a moment to spare.
type MachineUsage struct {
	BusyPercent  float64 `json:"busy_percent"`
	StealPercent float64 `json:"steal_percent"`
}

// ReadMachine reads the machine's CPU time so far.
func ReadMachine() (MachineCPU, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineCPU{}, err
	}
	return ParseMachine(raw)
}

// ParseMachine parses the aggregate "cpu" line of /proc/stat: user nice
// system idle iowait irq softirq steal [guest guest_nice].
func ParseMachine(raw []byte) (MachineCPU, error) {
	line, _, _ := bytes.Cut(raw, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return MachineCPU{}, fmt.Errorf("malformed /proc/stat: first line %.80q", line)
	}
	var v [8]uint64
	for i := range v {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return MachineCPU{}, fmt.Errorf("malformed /proc/stat: field %d of %.80q: %w", i+1, line, err)
		}
		v[i] = n
	}
	var m MachineCPU
	for _, n := range v {
		m.Total += n
	}
	m.Idle, m.Steal = v[3]+v[4], v[7]
	return m, nil
}

// Since returns how busy the machine was between before and m; ok is
// false when no time passed between the two readings. The kernel does not
// promise that every field only grows (iowait, part of Idle, can step
// back on an idle CPU), so a field that shrank counts as zero and the
// shares stay within 0 and 100.
func (m MachineCPU) Since(before MachineCPU) (u MachineUsage, ok bool) {
	if m.Total <= before.Total {
		return MachineUsage{}, false
	}
	total := float64(m.Total - before.Total)
	idle := float64(grown(before.Idle, m.Idle))
	steal := float64(grown(before.Steal, m.Steal))
	return MachineUsage{
		BusyPercent:  min(100, max(0, 100*(total-idle-steal)/total)),
		StealPercent: min(100, 100*steal/total),
	}, true
}

// grown is after-before for a counter, or 0 when it went back.
func grown(before, after uint64) uint64 {
	if after < before {
		return 0
	}
	return after - before
}
