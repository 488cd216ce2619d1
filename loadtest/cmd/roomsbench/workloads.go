package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"rooms/loadtest/internal/check"
	"rooms/loadtest/internal/gen"
	"rooms/loadtest/internal/procstat"
	"rooms/loadtest/internal/report"
	"rooms/loadtest/internal/stages"
)

// bench is one run's state shared by the workloads.
type bench struct {
	cfg     config
	api     *gen.API
	all     []*gen.User // every cached user (saved back after renewals)
	users   []*gen.User // the ones this run uses
	sampler *procstat.Sampler
	// self measures the generator process itself (group "generator"),
	// apart from the servers: its CPU and read and write calls per step.
	self *procstat.Sampler
	out  io.Writer
	run  string // run id carried by every payload of this run
}

// roomSet is a workload's rooms with their checkers and clients.
type roomSet struct {
	ids      []string
	checks   []*check.Room
	clients  []*gen.Client
	counters *gen.Counters
	readers  sync.WaitGroup
}

// newRooms creates n rooms whose messages come from senders members each.
func (b *bench) newRooms(ctx context.Context, name string, n, senders int) (*roomSet, error) {
	rs := &roomSet{counters: gen.NewCounters()}
	for i := range n {
		id, err := b.api.CreateRoom(ctx, i, b.users[0], fmt.Sprintf("bench %s %s %d", name, b.run, i))
		if err != nil {
			return nil, fmt.Errorf("create room: %w", err)
		}
		rs.ids = append(rs.ids, id)
		rs.checks = append(rs.checks, check.NewRoom(max(senders, 1)))
	}
	return rs, nil
}

// add adds a client of user u to room r (member -1: receive only).
func (b *bench) add(rs *roomSet, u *gen.User, r, member int) *gen.Client {
	c := b.api.NewClient(len(rs.clients), u, rs.ids[r], member, rs.checks[r], rs.counters, b.run, b.cfg.Payload)
	rs.clients = append(rs.clients, c)
	return c
}

// connectAll opens every client's connection, parallel calls at a time.
func (b *bench) connectAll(ctx context.Context, rs *roomSet, clients []*gen.Client, parallel int) error {
	sem := make(chan struct{}, parallel)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, c := range clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := c.Connect(ctx, &rs.readers); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// closeAll closes every client and waits for their readers.
func (rs *roomSet) closeAll() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range rs.clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.Close()
		})
	}
	wg.Wait()
	rs.readers.Wait()
}

// totals sums every room's check.
func (rs *roomSet) totals() check.Totals {
	var t check.Totals
	for _, r := range rs.checks {
		t.Add(r.Totals())
	}
	return t
}

// stepRun is what runStep needs to know about a step.
type stepRun struct {
	index   int
	name    string
	warmup  bool
	rate    float64
	length  time.Duration
	members int // receivers per message
	// send makes send i of the step.
	send func(i int, intended time.Time)
	// during, when set, runs beside the timetable (resume's drop and
	// resume); the step's drain starts after both ended.
	during func(ctx context.Context)
}

// runStep runs one step on its timetable, drains it, and reports it.
func (b *bench) runStep(ctx context.Context, rs *roomSet, st stepRun, before check.Totals) (report.Step, check.Totals) {
	lags := make([]*report.Hist, b.cfg.Workers)
	for i := range lags {
		lags[i] = report.NewHist()
	}
	for _, c := range rs.clients {
		c.Rec.SetStep(st.index)
	}
	var stagesBefore stages.Snapshot
	var stagesErr error
	if len(b.cfg.StageTargets) > 0 {
		stagesBefore, stagesErr = stages.Scrape(ctx, b.cfg.StageTargets)
	}
	b.sampler.Begin()
	b.self.Begin()
	machineBefore, machineErr := procstat.ReadMachine()
	tt := gen.NewTimetable(time.Now().Add(20*time.Millisecond), st.rate, st.length)
	var side sync.WaitGroup
	if st.during != nil {
		side.Go(func() { st.during(ctx) })
	}
	tt.Run(ctx, b.cfg.Workers,
		func(_, i int, at time.Time) { st.send(i, at) },
		func(w int, d time.Duration) { lags[w].Record(d) })
	side.Wait()

	// Drain: wait until every send is answered and every accepted message
	// reached every receiver of its room, or the drain time is over.
	sc := &rs.counters.Steps[st.index]
	deadline := time.Now().Add(b.cfg.Drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if sc.Acked.Load()+sc.Refused.Load() >= sc.Sent.Load() && sc.Delivered.Load() >= sc.Acked.Load()*int64(st.members) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	usage := b.sampler.End()
	genUsage := b.self.End()[selfGroup]
	machineAfter, machineAfterErr := procstat.ReadMachine()
	var stageSummary map[string]stages.Stage
	if len(b.cfg.StageTargets) > 0 && stagesErr == nil {
		var after stages.Snapshot
		if after, stagesErr = stages.Scrape(ctx, b.cfg.StageTargets); stagesErr == nil {
			stageSummary = stages.Between(stagesBefore, after)
		}
	}

	e2e, ack, lag := report.NewHist(), report.NewHist(), report.NewHist()
	var late int64
	for _, c := range rs.clients {
		c.Rec.Collect(st.index+1, e2e, ack, &late)
	}
	for _, l := range lags {
		lag.Merge(l)
	}
	now := rs.totals()
	s := report.Step{
		Name: st.name, Warmup: st.warmup, TargetRate: st.rate, DurationSeconds: st.length.Seconds(),
		Sent: sc.Sent.Load(), WriteFailed: sc.WriteFailed.Load(), Acked: sc.Acked.Load(), Refused: sc.Refused.Load(),
		Delivered: sc.Delivered.Load(), Late: late,
		Check: now.Sub(before), Ack: ack.Summary(), E2E: e2e.Summary(), SendLag: lag.Summary(),
		Processes: usage, Stages: stageSummary,
	}
	if stagesErr != nil {
		s.StagesError = stagesErr.Error()
	}
	s.Unconfirmed = s.Sent - s.Acked - s.Refused
	s.Expected = s.Acked * int64(st.members)
	s.Published = float64(s.Sent) / st.length.Seconds()
	s.DeliveredRate = float64(s.Delivered) / st.length.Seconds()
	if s.Expected > 0 {
		s.DeliveryRatio = float64(s.Delivered) / float64(s.Expected)
	}
	s.CPUPerDeliveryByProcess = map[string]float64{}
	for name, u := range usage {
		s.ServerCPU += u.CPUSeconds
		if s.Delivered > 0 {
			s.CPUPerDeliveryByProcess[name] = u.CPUSeconds * 1e6 / float64(s.Delivered)
		}
	}
	s.GeneratorCPU = genUsage.CPUSeconds
	s.GeneratorIO = genUsage.IO
	s.GeneratorSwitches = genUsage.Switches
	if machineErr == nil && machineAfterErr == nil {
		if u, ok := machineAfter.Since(machineBefore); ok {
			s.Machine = &u
		}
	}
	if s.Delivered > 0 {
		s.CPUPerDelivery = s.ServerCPU * 1e6 / float64(s.Delivered)
		s.GeneratorCPUPerDelivery = s.GeneratorCPU * 1e6 / float64(s.Delivered)
	}
	s.Valid = s.SendLag.P99 <= float64(b.cfg.LagBudget.Microseconds())/1000
	var why []string
	if !s.Valid {
		why = append(why, fmt.Sprintf("generator send lag p99 %.1f ms over %v: step invalid", s.SendLag.P99, b.cfg.LagBudget))
	}
	if s.E2E.P99 > float64(b.cfg.Budget.Microseconds())/1000 {
		why = append(why, fmt.Sprintf("e2e p99 over %v", b.cfg.Budget))
	}
	if s.Delivered < s.Expected || s.Check.Lost > 0 {
		why = append(why, "not every accepted message delivered")
	}
	if s.Refused > 0 || s.WriteFailed > 0 || s.Unconfirmed > 0 {
		why = append(why, fmt.Sprintf("%d refused, %d unwritten, %d unconfirmed sends", s.Refused, s.WriteFailed, s.Unconfirmed))
	}
	s.Held = !st.warmup && len(why) == 0
	s.Note = strings.Join(why, "; ")
	fmt.Fprintf(b.out, "  step %-8s pub %6.0f/s deliv %7.0f/s ratio %.4f e2e p50 %6.1f p99 %7.1f ms ack p99 %6.1f ms lag p99 %5.1f ms cpu %5.1f µs/msg machine %s %% busy %s\n",
		s.Name, s.Published, s.DeliveredRate, s.DeliveryRatio, s.E2E.P50, s.E2E.P99, s.Ack.P99, s.SendLag.P99, s.CPUPerDelivery, s.BusyPercent(), s.Note)
	if line := stages.Line(s.Stages); line != "" {
		fmt.Fprintf(b.out, "           %s\n", line)
	}
	return s, now
}

// finish fills a workload's totals and verdict.
func finish(wl *report.Workload, rs *roomSet) {
	wl.Totals = rs.totals()
	wl.Errors = rs.counters.ErrorCodes()
	closes, lastErr := rs.counters.Closes()
	if len(closes) > 0 {
		wl.Closes = closes
		if wl.Extra == nil {
			wl.Extra = map[string]any{}
		}
		wl.Extra["last_connection_error"] = lastErr
		wl.Extra["reconnects"] = rs.counters.Reconnects.Load()
	}
	t := wl.Totals
	if t.Lost > 0 {
		wl.Problems = append(wl.Problems, fmt.Sprintf("%d accepted deliveries lost", t.Lost))
	}
	if t.Dups > 0 {
		wl.Problems = append(wl.Problems, fmt.Sprintf("%d duplicates", t.Dups))
	}
	if t.Reorders > 0 {
		wl.Problems = append(wl.Problems, fmt.Sprintf("%d reordered", t.Reorders))
	}
	if t.SeqGaps > 0 || t.SeqRepeats > 0 {
		wl.Problems = append(wl.Problems, fmt.Sprintf("seq gaps %d, repeats %d", t.SeqGaps, t.SeqRepeats))
	}
	if nr := rs.counters.NotRecovered.Load(); nr > 0 {
		wl.Problems = append(wl.Problems, fmt.Sprintf("%d resumes not recovered", nr))
	}
	wl.Failed = len(wl.Problems) > 0
	for _, s := range wl.Steps {
		if s.Held && s.TargetRate > wl.HighestHeld {
			wl.HighestHeld = s.TargetRate
		}
	}
}

// chatLike runs the chat and fanout workloads: rooms × members clients,
// every client a distinct user and a sender, steps of published rates.
func (b *bench) chatLike(ctx context.Context, name string, rooms, members int, rates []float64, warmup time.Duration) (report.Workload, error) {
	wl := report.Workload{Name: name, Shape: fmt.Sprintf("%d rooms × %d clients, steps %v msgs/s, %v each after %v warm-up, payload %d B",
		rooms, members, rates, b.cfg.StepLen, warmup, b.cfg.Payload)}
	if rooms*members > len(b.users) {
		return wl, fmt.Errorf("%d clients but %d users", rooms*members, len(b.users))
	}
	rs, err := b.newRooms(ctx, name, rooms, members)
	if err != nil {
		return wl, err
	}
	for r := range rooms {
		for m := range members {
			b.add(rs, b.users[r*members+m], r, m)
		}
	}
	defer rs.closeAll()
	start := time.Now()
	if err := b.connectAll(ctx, rs, rs.clients, 32); err != nil {
		return wl, err
	}
	fmt.Fprintf(b.out, "  %d clients connected in %v\n", len(rs.clients), time.Since(start).Round(time.Millisecond))
	// Let the join presence events of everyone settle before measuring.
	time.Sleep(time.Second)

	send := func(step int) func(int, time.Time) {
		return func(i int, at time.Time) {
			r, m := gen.Assign(i, rooms, members)
			rs.clients[r*members+m].Send(step, at)
		}
	}
	var steps []stepRun
	if warmup > 0 {
		steps = append(steps, stepRun{name: "warmup", warmup: true, rate: rates[0], length: warmup})
	}
	for _, r := range rates {
		steps = append(steps, stepRun{name: fmt.Sprintf("%.0f", r), rate: r, length: b.cfg.StepLen})
	}
	var before check.Totals
	for i, st := range steps {
		if ctx.Err() != nil {
			return wl, ctx.Err()
		}
		st.index, st.members, st.send = i, members, send(i)
		var s report.Step
		s, before = b.runStep(ctx, rs, st, before)
		wl.Steps = append(wl.Steps, s)
	}
	// A step past the knee may still be delivering when its drain time is
	// over: give every accepted message up to a minute more to arrive
	// before anything missing counts as lost.
	b.finalDrain(ctx, rs, len(steps), members)
	finish(&wl, rs)
	return wl, nil
}

// finalDrain waits up to a minute until every accepted message of steps
// [0, n) reached its members receivers.
func (b *bench) finalDrain(ctx context.Context, rs *roomSet, n, members int) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		behind := false
		for i := range n {
			sc := &rs.counters.Steps[i]
			if sc.Delivered.Load() < sc.Acked.Load()*int64(members) {
				behind = true
			}
		}
		if !behind {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// connect opens ConnectClients connections at ConnectRate on an open-loop
// timetable (connect latency from the intended start to the welcome), lets
// them idle, and measures the gateways' memory per idle connection.
func (b *bench) connect(ctx context.Context) (report.Workload, error) {
	cfg := b.cfg
	wl := report.Workload{Name: "connect", Shape: fmt.Sprintf("%d connections at %.0f/s over %d rooms and %d users, then %v idle",
		cfg.ConnectClients, cfg.ConnectRate, cfg.ConnectRooms, min(len(b.users), cfg.ConnectClients), cfg.Idle)}
	rs, err := b.newRooms(ctx, "connect", cfg.ConnectRooms, 0)
	if err != nil {
		return wl, err
	}
	for i := range cfg.ConnectClients {
		b.add(rs, b.users[i%len(b.users)], i%cfg.ConnectRooms, -1)
	}
	defer rs.closeAll()
	gateways := func(m map[string]int64) (sum int64, each map[string]int64) {
		each = map[string]int64{}
		for name, v := range m {
			if strings.HasPrefix(name, "gateway") {
				sum += v
				each[name] = v
			}
		}
		return sum, each
	}
	baseline, _ := gateways(b.sampler.RSS())
	var goBefore goMem
	var goErr error
	if len(cfg.AdminTargets) > 0 {
		goBefore, goErr = goInUseAll(ctx, cfg.AdminTargets)
	}
	b.sampler.Begin()

	var (
		mu     sync.Mutex
		lat    = report.NewHist()
		failed int
		first  string
		dials  sync.WaitGroup
	)
	lag := report.NewHist()
	tt := gen.NewTimetable(time.Now().Add(20*time.Millisecond), cfg.ConnectRate, time.Duration(float64(cfg.ConnectClients)/cfg.ConnectRate*float64(time.Second)))
	start := time.Now()
	tt.Run(ctx, 1, func(_, i int, at time.Time) {
		c := rs.clients[i]
		// Open loop: each dial runs on its own, so a slow handshake delays
		// no later one.
		dials.Go(func() {
			welcomed, err := c.Connect(ctx, &rs.readers)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if first == "" {
					first = err.Error()
				}
				return
			}
			lat.Record(welcomed.Sub(at))
		})
	}, func(_ int, d time.Duration) { lag.Record(d) })
	dials.Wait()
	took := time.Since(start)
	connected := cfg.ConnectClients - failed
	fmt.Fprintf(b.out, "  %d connected (%d failed) in %v, idling %v\n", connected, failed, took.Round(time.Millisecond), cfg.Idle)
	time.Sleep(cfg.Idle)
	usage := b.sampler.End()
	after, each := gateways(b.sampler.RSS())

	wl.Lat = map[string]report.Latency{"connect_latency": lat.Summary(), "dial_send_lag": lag.Summary()}
	perConn := 0.0
	if connected > 0 {
		perConn = float64(after-baseline) / float64(connected)
	}
	wl.Extra = map[string]any{
		"connected":                      connected,
		"failed":                         failed,
		"connect_seconds":                took.Seconds(),
		"gateway_rss_before_mb":          float64(baseline) / (1 << 20),
		"gateway_rss_idle_mb":            float64(after) / (1 << 20),
		"gateway_kb_per_idle_connection": perConn / 1024,
	}
	for name, v := range each {
		wl.Extra[name+"_rss_idle_mb"] = float64(v) / (1 << 20)
	}
	if len(cfg.AdminTargets) > 0 {
		var goAfter goMem
		if goErr == nil {
			goAfter, goErr = goInUseAll(ctx, cfg.AdminTargets)
		}
		if goErr != nil {
			wl.Extra["gateway_go_memory_error"] = goErr.Error()
		} else {
			wl.Extra["gateway_go_inuse_before_mb"] = float64(goBefore.total()) / (1 << 20)
			wl.Extra["gateway_go_inuse_idle_mb"] = float64(goAfter.total()) / (1 << 20)
			if connected > 0 {
				per := func(after, before int64) float64 { return float64(after-before) / float64(connected) / 1024 }
				wl.Extra["gateway_go_kb_per_idle_connection"] = per(goAfter.total(), goBefore.total())
				wl.Extra["gateway_go_heap_kb_per_idle_connection"] = per(goAfter.Heap, goBefore.Heap)
				wl.Extra["gateway_go_stack_kb_per_idle_connection"] = per(goAfter.Stack, goBefore.Stack)
			}
		}
	}
	cpu := map[string]float64{}
	for name, u := range usage {
		cpu[name] = u.CPUSeconds
	}
	wl.Extra["server_cpu_seconds"] = cpu
	if failed > 0 {
		wl.Extra["first_failure"] = first
		wl.Problems = append(wl.Problems, fmt.Sprintf("%d connections failed", failed))
	}
	finish(&wl, rs)
	return wl, nil
}

// resume keeps ResumeRooms × ResumeSenders senders publishing at ResumeRate
// while ResumeClients receive-only clients drop for ResumeDrop and resume
// with since_seq; it reports their catch-up time and checks they missed
// nothing.
func (b *bench) resume(ctx context.Context) (report.Workload, error) {
	cfg := b.cfg
	before := 3 * time.Second
	length := before + cfg.ResumeDrop + cfg.ResumeAfter
	wl := report.Workload{Name: "resume", Shape: fmt.Sprintf("%d rooms × %d senders at %.0f msgs/s; %d clients drop for %v and resume with since_seq",
		cfg.ResumeRooms, cfg.ResumeSenders, cfg.ResumeRate, cfg.ResumeClients, cfg.ResumeDrop)}
	senders := cfg.ResumeRooms * cfg.ResumeSenders
	if senders+cfg.ResumeClients > len(b.users) {
		return wl, fmt.Errorf("%d clients but %d users", senders+cfg.ResumeClients, len(b.users))
	}
	rs, err := b.newRooms(ctx, "resume", cfg.ResumeRooms, cfg.ResumeSenders)
	if err != nil {
		return wl, err
	}
	for r := range cfg.ResumeRooms {
		for m := range cfg.ResumeSenders {
			b.add(rs, b.users[r*cfg.ResumeSenders+m], r, m)
		}
	}
	var droppers []*gen.Client
	for i := range cfg.ResumeClients {
		droppers = append(droppers, b.add(rs, b.users[senders+i], i%cfg.ResumeRooms, -1))
	}
	defer rs.closeAll()
	if err := b.connectAll(ctx, rs, rs.clients, 32); err != nil {
		return wl, err
	}
	time.Sleep(time.Second)

	// Receivers per message: the room's senders and its droppers.
	perRoom := make([]int, cfg.ResumeRooms)
	for i := range cfg.ResumeClients {
		perRoom[i%cfg.ResumeRooms]++
	}
	sort.Ints(perRoom)
	if perRoom[0] != perRoom[len(perRoom)-1] {
		return wl, fmt.Errorf("-resume-clients %d must be a multiple of -resume-rooms %d", cfg.ResumeClients, cfg.ResumeRooms)
	}
	var catchUpWait time.Duration
	st := stepRun{
		name: "resume", rate: cfg.ResumeRate, length: length, members: cfg.ResumeSenders + perRoom[0],
		send: func(i int, at time.Time) {
			r, m := gen.Assign(i, cfg.ResumeRooms, cfg.ResumeSenders)
			rs.clients[r*cfg.ResumeSenders+m].Send(0, at)
		},
		during: func(ctx context.Context) {
			sleep(ctx, before)
			for _, c := range droppers {
				c.Drop()
			}
			sleep(ctx, cfg.ResumeDrop)
			start := time.Now()
			for _, c := range droppers {
				c.Resume()
			}
			for time.Since(start) < 30*time.Second && ctx.Err() == nil {
				busy := 0
				for _, c := range droppers {
					if c.CatchingUp() {
						busy++
					}
				}
				if busy == 0 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			catchUpWait = time.Since(start)
		},
	}
	s, _ := b.runStep(ctx, rs, st, check.Totals{})
	wl.Steps = append(wl.Steps, s)
	wl.Lat = map[string]report.Latency{"catch_up": rs.counters.CatchUp()}
	wl.Extra = map[string]any{
		"dropped":              rs.counters.Drops.Load(),
		"not_recovered":        rs.counters.NotRecovered.Load(),
		"all_caught_up_within": catchUpWait.Round(time.Millisecond).String(),
	}
	finish(&wl, rs)
	return wl, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// selfGroup is the name of the generator's own group in bench.self.
const selfGroup = "generator"

// newSelfSampler returns a sampler of the generator process alone. Only
// its Begin and End are used (no RSS loop).
func newSelfSampler() *procstat.Sampler {
	return procstat.NewSampler([]procstat.Group{{Name: selfGroup, PIDs: []int{os.Getpid()}}}, time.Second)
}
