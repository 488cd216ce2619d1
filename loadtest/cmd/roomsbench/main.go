// Command roomsbench is Rooms' load generator and benchmark. It talks to the
// gateways only as a client would (REST to set up users and rooms, rooms.v2
// WebSockets for the traffic), sends on an open-loop timetable, checks every
// delivery (loss, duplicates, per-sender order, seq contiguity), samples the
// server processes' CPU and memory from /proc, and writes a table to stdout
// and a JSON result file.
//
// See docs/performance.md for the method and `roomsbench -h` for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"rooms/loadtest/internal/gen"
	"rooms/loadtest/internal/procstat"
	"rooms/loadtest/internal/report"
)

// errBroken is returned when a check failed (loss, duplicate, reorder, seq
// gap, failed resume): the run's results are still written.
var errBroken = errors.New("delivery checks failed")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "roomsbench:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// config is every flag, parsed once.
type config struct {
	Targets []string
	// AdminTargets are the gateways' admin base URLs (metrics and pprof),
	// for the Go memory of idle connections; optional.
	AdminTargets []string
	// StageTargets are the admin base URLs of every gateway and worker,
	// whose latency histograms split each step's latency by stage.
	StageTargets []string
	Workloads    []string

	Rooms, Clients int
	Steps          []float64
	StepLen        time.Duration
	Warmup         time.Duration
	Payload        int
	Workers        int
	Drain          time.Duration
	Budget         time.Duration
	LagBudget      time.Duration

	FanoutClients int
	FanoutRate    float64

	ConnectClients, ConnectRooms int
	ConnectRate                  float64
	Idle                         time.Duration

	ResumeRooms, ResumeSenders, ResumeClients int
	ResumeRate                                float64
	ResumeDrop, ResumeAfter                   time.Duration

	UsersFile, UserPrefix string
	SetupParallel         int
	Sources               []net.IP
	PIDDir                string
	Results, Prefix       string
	Note                  string
	LoopbackWriteUS       float64
	WakeupSameCPUUS       float64
	WakeupAcrossCPUsUS    float64
	CPUProfile            string
}

func parseFlags(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("roomsbench", flag.ContinueOnError)
	fs.SetOutput(out)
	targets := fs.String("targets", "http://127.0.0.1:8081,http://127.0.0.1:8082", "comma-separated gateway base URLs; clients are spread over them")
	stageTargets := fs.String("stage-targets", "", "comma-separated admin base URLs of the gateways and workers: each step also reports their latency histograms by stage (intake, store, commit, append, fan-out read, delivery)")
	adminTargets := fs.String("admin-targets", "", "comma-separated admin base URLs of the gateways (ADMIN_ADDR): connect also reports their Go memory after a GC")
	workloads := fs.String("workloads", "chat,fanout,connect,resume", "comma-separated workloads to run, in order: chat, fanout, connect, resume")
	fs.IntVar(&c.Rooms, "rooms", 100, "chat: rooms")
	fs.IntVar(&c.Clients, "clients", 10, "chat: clients (users) per room")
	steps := fs.String("steps", "250,500,1000,2000,4000", "chat: published msgs/s of each step")
	fs.DurationVar(&c.StepLen, "step", 20*time.Second, "length of each step")
	fs.DurationVar(&c.Warmup, "warmup", 10*time.Second, "warm-up before the first step, at its rate (reported, never held)")
	fs.IntVar(&c.Payload, "payload", 100, "content size of each message in bytes")
	fs.IntVar(&c.Workers, "workers", 8, "goroutines sending on the timetable")
	fs.DurationVar(&c.Drain, "drain", 15*time.Second, "longest wait after a step for its acks and deliveries")
	fs.DurationVar(&c.Budget, "budget", 100*time.Millisecond, "end-to-end p99 a step must stay within to count as held")
	fs.DurationVar(&c.LagBudget, "lag-budget", 5*time.Millisecond, "generator send-lag p99 above which a step is invalid")
	fs.IntVar(&c.FanoutClients, "fanout-clients", 1000, "fanout: clients in the one room")
	fs.Float64Var(&c.FanoutRate, "fanout-rate", 20, "fanout: published msgs/s")
	fs.IntVar(&c.ConnectClients, "connect-clients", 5000, "connect: connections (users are reused round-robin)")
	fs.IntVar(&c.ConnectRooms, "connect-rooms", 50, "connect: rooms the connections are spread over")
	fs.Float64Var(&c.ConnectRate, "connect-rate", 500, "connect: new connections per second")
	fs.DurationVar(&c.Idle, "idle", 5*time.Second, "connect: idle time before memory is measured")
	fs.IntVar(&c.ResumeRooms, "resume-rooms", 20, "resume: rooms")
	fs.IntVar(&c.ResumeSenders, "resume-senders", 10, "resume: sending clients per room (they stay connected)")
	fs.IntVar(&c.ResumeClients, "resume-clients", 200, "resume: receiving clients that drop and resume with since_seq")
	fs.Float64Var(&c.ResumeRate, "resume-rate", 200, "resume: published msgs/s")
	fs.DurationVar(&c.ResumeDrop, "resume-drop", 10*time.Second, "resume: how long the clients stay away")
	fs.DurationVar(&c.ResumeAfter, "resume-after", 5*time.Second, "resume: how long the load goes on after the clients resumed")
	fs.StringVar(&c.UsersFile, "users-file", ".run/bench-users.json", "cache of the benchmark users' credentials, reused across runs against the same database")
	fs.StringVar(&c.UserPrefix, "user-prefix", "bench_", "nickname prefix of benchmark users")
	fs.IntVar(&c.SetupParallel, "setup-parallel", 8, "parallel REST calls while logging users in")
	sources := fs.String("source-ips", "auto", "local addresses to connect from, spread over users: auto (127.0.0.2-127.0.0.254 when every target is on loopback), none, or FIRST-LAST")
	fs.StringVar(&c.PIDDir, "pid-dir", ".run/pid", "folder of the stack's pid files (processes to measure)")
	fs.StringVar(&c.Results, "results", "loadtest/results", "folder of the JSON results")
	fs.StringVar(&c.Prefix, "name", "bench", "file name prefix of the JSON result")
	fs.StringVar(&c.Note, "note", "", "free text stored with the result (e.g. what else ran on the machine)")
	fs.Float64Var(&c.LoopbackWriteUS, "loopback-write-us", 0, "CPU-µs of one loopback socket write on this machine, measured by cmd/wirecost before the run (bench.sh does), stored with the host")
	fs.Float64Var(&c.WakeupSameCPUUS, "wakeup-same-cpu-us", 0, "CPU-µs of a wake-up round trip between two processes on one CPU, measured by cmd/wirecost -wakeups before the run (bench.sh does), stored with the host")
	fs.Float64Var(&c.WakeupAcrossCPUsUS, "wakeup-across-cpus-us", 0, "the same with the two processes on two CPUs")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the generator's own CPU profile to this file (go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.Targets = splitList(*targets)
	c.AdminTargets = splitList(*adminTargets)
	c.StageTargets = splitList(*stageTargets)
	c.Workloads = splitList(*workloads)
	if len(c.Targets) == 0 {
		return c, errors.New("-targets: no gateway URL")
	}
	for _, w := range c.Workloads {
		switch w {
		case "chat", "fanout", "connect", "resume":
		default:
			return c, fmt.Errorf("-workloads: unknown workload %q", w)
		}
	}
	for _, s := range splitList(*steps) {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 {
			return c, fmt.Errorf("-steps: bad rate %q", s)
		}
		c.Steps = append(c.Steps, v)
	}
	if len(c.Steps) == 0 || len(c.Steps) >= gen.MaxSteps-1 {
		return c, fmt.Errorf("-steps: between 1 and %d steps", gen.MaxSteps-2)
	}
	if c.Rooms < 1 || c.Clients < 1 || c.FanoutClients < 1 || c.ResumeRooms < 1 || c.ResumeSenders < 1 || c.ConnectRooms < 1 {
		return c, errors.New("rooms and clients must be at least 1")
	}
	if c.Payload < 40 || c.Payload > 2000 {
		return c, errors.New("-payload: between 40 and 2000 bytes")
	}
	var err error
	c.Sources, err = parseSources(*sources, c.Targets)
	return c, err
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseSources turns -source-ips into addresses.
func parseSources(s string, targets []string) ([]net.IP, error) {
	switch s {
	case "none", "":
		return nil, nil
	case "auto":
		for _, t := range targets {
			u, err := url.Parse(t)
			if err != nil {
				return nil, fmt.Errorf("-targets: %w", err)
			}
			ip := net.ParseIP(u.Hostname())
			if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
				return nil, nil
			}
		}
		s = "127.0.0.2-127.0.0.254"
	}
	first, last, ok := strings.Cut(s, "-")
	a, b := net.ParseIP(first).To4(), net.ParseIP(last).To4()
	if !ok || a == nil || b == nil || a[0] != b[0] || a[1] != b[1] || a[2] != b[2] || a[3] > b[3] {
		return nil, fmt.Errorf("-source-ips: want FIRST-LAST within one /24, got %q", s)
	}
	var ips []net.IP
	for i := int(a[3]); i <= int(b[3]); i++ {
		ips = append(ips, net.IPv4(a[0], a[1], a[2], byte(i)))
	}
	return ips, nil
}

// usersNeeded is how many distinct users the chosen workloads use.
func (c config) usersNeeded() int {
	n := 1
	for _, w := range c.Workloads {
		switch w {
		case "chat":
			n = max(n, c.Rooms*c.Clients)
		case "fanout":
			n = max(n, c.FanoutClients)
		case "connect":
			n = max(n, min(c.ConnectClients, 1000))
		case "resume":
			n = max(n, c.ResumeRooms*c.ResumeSenders+c.ResumeClients)
		}
	}
	return n
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res := &report.Result{
		Started: time.Now(), Command: "roomsbench " + strings.Join(args, " "),
		Targets: cfg.Targets, Host: hostInfo(cfg), Note: cfg.Note,
	}
	// Spread the clients over the gateways that are ready: a gateway that
	// another test stopped must not fail the run before it starts.
	var ready []string
	for _, t := range cfg.Targets {
		if err := gen.Ready(ctx, t); err != nil {
			fmt.Fprintf(stdout, "roomsbench: skipping %s: %v\n", t, err)
			continue
		}
		ready = append(ready, t)
	}
	if len(ready) == 0 {
		return errors.New("no gateway of -targets is ready")
	}
	res.Targets = ready
	api := &gen.API{Bases: ready, Sources: cfg.Sources}

	n := cfg.usersNeeded()
	fmt.Fprintf(stdout, "roomsbench: logging in %d users (cache %s)\n", n, cfg.UsersFile)
	setupStart := time.Now()
	all, err := api.Users(ctx, cfg.UsersFile, cfg.UserPrefix, n, cfg.SetupParallel)
	if err != nil {
		return fmt.Errorf("set up users: %w", err)
	}
	fmt.Fprintf(stdout, "roomsbench: users ready in %v\n", time.Since(setupStart).Round(time.Millisecond))

	groups := procstat.StackGroups(cfg.PIDDir)
	sampler := procstat.NewSampler(groups, 500*time.Millisecond)
	sctx, stopSampler := context.WithCancel(ctx)
	defer stopSampler()
	go sampler.Run(sctx)

	b := &bench{cfg: cfg, api: api, all: all, users: all[:n], sampler: sampler, self: newSelfSampler(), out: stdout, run: strconv.FormatInt(time.Now().UnixNano()%1e9, 36)}
	for _, w := range cfg.Workloads {
		if err := b.renew(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "roomsbench: workload %s\n", w)
		var wl report.Workload
		switch w {
		case "chat":
			wl, err = b.chatLike(ctx, "chat", cfg.Rooms, cfg.Clients, cfg.Steps, cfg.Warmup)
		case "fanout":
			wl, err = b.chatLike(ctx, "fanout", 1, cfg.FanoutClients, []float64{cfg.FanoutRate}, min(cfg.Warmup, 5*time.Second))
		case "connect":
			wl, err = b.connect(ctx)
		case "resume":
			wl, err = b.resume(ctx)
		}
		if err != nil {
			return fmt.Errorf("workload %s: %w", w, err)
		}
		res.Workloads = append(res.Workloads, wl)
	}
	res.Finished = time.Now()
	res.Goals = judge(cfg, res)
	res.WriteTable(stdout)
	path, err := res.WriteJSON(cfg.Results, cfg.Prefix)
	if err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	fmt.Fprintf(stdout, "\nresult written to %s\n", path)
	if res.Failed() {
		return errBroken
	}
	return nil
}

// renew refreshes access tokens older than 5 minutes (they live 15), so a
// long run never dials with an expired one, and saves the rotated refresh
// tokens.
func (b *bench) renew(ctx context.Context) error {
	var stale []*gen.User
	for _, u := range b.users {
		if time.Since(u.Obtained) > 5*time.Minute {
			stale = append(stale, u)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	err := b.api.RenewAll(ctx, stale, b.cfg.SetupParallel)
	if serr := gen.SaveUsers(b.cfg.UsersFile, b.all); err == nil {
		err = serr
	}
	return err
}

func hostInfo(cfg config) report.Host {
	h := report.Host{CPUs: runtime.NumCPU(), GoVer: runtime.Version(), LoopbackWriteUS: cfg.LoopbackWriteUS,
		WakeupSameCPUUS: cfg.WakeupSameCPUUS, WakeupAcrossCPUsUS: cfg.WakeupAcrossCPUsUS}
	h.Hostname, _ = os.Hostname()
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(raw), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
				h.MemoryGB = kb / (1 << 20)
			}
		}
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(raw))
	}
	if raw, err := os.ReadFile("/proc/loadavg"); err == nil {
		h.Load1 = strings.Join(strings.Fields(string(raw))[:3], " ")
	}
	return h
}
