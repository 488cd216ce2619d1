//go:build faults

package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"rooms/shared/message"
	"rooms/shared/testenv"
)

// TestFaultChaos runs the suite's faults together: for FAULTS_CHAOS_TIME
// (default 60 s) while messages flow, a seeded random schedule kills,
// stops and restarts gateways, workers, the broker, Redis (which comes back
// empty) and PostgreSQL, freezes any of them (SIGSTOP, then SIGCONT),
// terminates the database's connections and deletes the fan-out streams,
// with up to three faults at a time. Every kind of fault (chaosKinds) comes
// once first, in a random order, then kinds at random. Meanwhile every
// REST request to a gateway must be answered 200 or 503 unavailable
// (restProber). Each of the other
// tests meets one fault on a healthy system; this one meets faults while
// the system is still recovering from the last, such as a worker killed
// while PostgreSQL is down or a gateway drained while the broker is away.
// Afterwards the same guarantees are checked: every acked message stored
// once, seqs gapless, every client with its room's whole sequence in
// order, no committed offset ahead of the database.
//
// The seed is logged; FAULTS_CHAOS_SEED=<seed> repeats a schedule (the
// timing of the processes themselves still varies from run to run).
func TestFaultChaos(t *testing.T) {
	seed := chaosSeed(t)
	length := 60 * time.Second
	if v := os.Getenv("FAULTS_CHAOS_TIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("FAULTS_CHAOS_TIME=%q: want a positive duration", v)
		}
		length = d
	}
	t.Logf("chaos seed %d (repeat with FAULTS_CHAOS_SEED=%d), %v of faults", seed, seed, length)
	r := record(t)
	s := newStack(t, stackOpts{privatePG: true, privateRedis: true,
		// A short message timeout, so that sends held by a broker outage
		// come back as unknown outcomes and are retried within the test.
		// Access tokens that outlive a long schedule, for the clients'
		// reconnects and the REST probes.
		gatewayEnv: []string{"KAFKA_MESSAGE_TIMEOUT=10s", "ACCESS_TTL=6h"},
		// Workers leave the group after 5 s without PostgreSQL or Redis
		// (STEP_ASIDE_AFTER), so that the longer outages of the schedule
		// make them leave and join again while other faults go on.
		workerEnv: []string{"STEP_ASIDE_AFTER=5s"}})
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(1_000_000, 100*time.Millisecond, 20*time.Second, length+5*time.Minute)
	time.Sleep(2 * time.Second)

	probe := startRESTProber(t, s, w.rooms[0], w.all[0].u.Access, 200*time.Millisecond)
	c := newChaos(t, s, seed)
	c.run(length)
	c.healAll()
	healed := time.Now()
	w.stop()
	probe.finish(r)
	r.measure("chaos_seed", float64(seed))
	faults := 0
	for _, n := range c.counts {
		faults += n
	}
	r.measure("chaos_faults", float64(faults))
	asides := 0
	for _, p := range s.workers {
		asides += p.LogCount("leaving the consumer group")
	}
	r.measure("workers_stepped_aside", float64(asides))
	t.Logf("chaos: %d faults in %v, at most %d at a time: %v; workers left the group %d times (STEP_ASIDE_AFTER)", faults, length, c.maxDown, c.counts, asides)

	w.verify(t, r, 4*time.Minute, "chaos_end", healed)
	if r.Acked < 100 {
		t.Fatalf("only %d messages acked: the schedule left no time for traffic", r.Acked)
	}
}

// chaosSeed is FAULTS_CHAOS_SEED, or a new seed small enough to be stored
// exactly in the summary's numbers.
func chaosSeed(t *testing.T) uint64 {
	if v := os.Getenv("FAULTS_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("FAULTS_CHAOS_SEED=%q: %v", v, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano() % (1 << 31))
}

// chaos is a fault schedule over one stack. Everything happens on the
// test's goroutine: faults start and heal in time order, one at a time.
type chaos struct {
	t     *testing.T
	s     *stack
	rng   *rand.Rand
	start time.Time

	down    map[string]time.Time // what is down, until when
	heals   map[string]func()
	pending []int // indexes of the kinds not yet drawn
	maxDown int
	counts  map[string]int
}

func newChaos(t *testing.T, s *stack, seed uint64) *chaos {
	return &chaos{t: t, s: s, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		start: time.Now(), down: map[string]time.Time{}, heals: map[string]func(){}, counts: map[string]int{}}
}

func (c *chaos) logf(format string, args ...any) {
	c.t.Helper()
	c.t.Logf("chaos %6.2fs: %s", time.Since(c.start).Seconds(), fmt.Sprintf(format, args...))
}

// between is a random duration in [lo, hi).
func (c *chaos) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(c.rng.Int64N(int64(hi-lo)))
}

// infra is what a gateway needs to be ready; it is healed before a gateway
// is started again.
var infra = []string{"postgres", "redis", "broker"}

// run starts faults for length, and past it until every kind has been
// drawn once, healing each fault when its time comes. A fault
// starts every 1–4 s while fewer than three things are down; what it takes
// down stays down for 1–5 s (PostgreSQL 2–8 s), so faults often overlap.
func (c *chaos) run(length time.Duration) {
	end := time.Now().Add(length)
	next := time.Now()
	for {
		now := time.Now()
		if due, name := c.nextHeal(); name != "" && !due.After(now) {
			c.heal(name)
			continue
		}
		if !now.Before(end) && c.pending != nil && len(c.pending) == 0 {
			return
		}
		if !next.After(now) {
			if len(c.down) < 3 {
				c.fault()
			}
			next = time.Now().Add(c.between(time.Second, 4*time.Second))
			continue
		}
		wake := next
		if due, name := c.nextHeal(); name != "" && due.Before(wake) {
			wake = due
		}
		time.Sleep(time.Until(wake))
	}
}

// nextHeal is the earliest heal due ("" when nothing is down).
func (c *chaos) nextHeal() (time.Time, string) {
	var at time.Time
	name := ""
	for n, until := range c.down {
		if name == "" || until.Before(at) || (until.Equal(at) && n < name) {
			at, name = until, n
		}
	}
	return at, name
}

// healAll heals what is still down: the servers first, then the workers
// and the gateways.
func (c *chaos) healAll() {
	for _, n := range infra {
		if _, ok := c.down[n]; ok {
			c.heal(n)
		}
	}
	var rest []string
	for n := range c.down {
		rest = append(rest, n)
	}
	slices.Sort(rest)
	for _, n := range rest {
		c.heal(n)
	}
}

// heal brings name back.
func (c *chaos) heal(name string) {
	c.t.Helper()
	if _, ok := c.down[name]; !ok {
		return
	}
	h := c.heals[name]
	delete(c.down, name)
	delete(c.heals, name)
	h()
	c.logf("%s back", name)
}

// takeDown marks name down for d, with heal to bring it back.
func (c *chaos) takeDown(name string, d time.Duration, heal func()) {
	c.down[name] = time.Now().Add(d)
	c.heals[name] = heal
	c.maxDown = max(c.maxDown, len(c.down))
	c.logf("%s down for %.1fs (down now: %d)", name, d.Seconds(), len(c.down))
}

// chaosKind is one kind of fault: able reports whether it has something to
// act on, do starts it.
type chaosKind struct {
	name string
	able func(c *chaos) bool
	do   func(c *chaos)
}

// chaosKinds are the faults a schedule draws from. A stopped or killed
// process or server is down until it is started again; a frozen one
// (SIGSTOP: its connections stay open and silent, as with a machine that
// pauses, or a network that drops everything without a reset) is down
// until SIGCONT. Gateways and workers stay frozen for up to 15 s, past the
// workers' session timeout (10 s), so that a frozen worker loses its
// partitions to the other and wakes up as a zombie holding a batch.
var chaosKinds = []chaosKind{
	{"gateway SIGKILL", gatewaysUp, func(c *chaos) { c.stopProc(true, syscall.SIGKILL) }},
	{"gateway SIGTERM", gatewaysUp, func(c *chaos) { c.stopProc(true, syscall.SIGTERM) }},
	{"gateway frozen", gatewaysUp, func(c *chaos) { c.freezeProc(true) }},
	{"worker SIGKILL", workersUp, func(c *chaos) { c.stopProc(false, syscall.SIGKILL) }},
	{"worker SIGTERM", workersUp, func(c *chaos) { c.stopProc(false, syscall.SIGTERM) }},
	{"worker frozen", workersUp, func(c *chaos) { c.freezeProc(false) }},
	{"broker stopped", isUp("broker"), func(c *chaos) {
		d := c.between(time.Second, 5*time.Second)
		c.logf("broker: SIGTERM")
		err := c.s.broker.Stop(c.t, syscall.SIGTERM)
		c.logf("broker exited: %v", err)
		c.takeDown("broker", d, func() { c.s.broker.Start(c.t) })
	}},
	{"broker frozen", isUp("broker"), func(c *chaos) {
		c.freeze("broker", c.between(time.Second, 8*time.Second), c.s.broker.PID())
	}},
	{"redis killed", isUp("redis"), func(c *chaos) {
		d := c.between(time.Second, 5*time.Second)
		c.logf("redis: SIGKILL (it comes back empty)")
		_ = c.s.redis.Stop(c.t, syscall.SIGKILL)
		c.takeDown("redis", d, func() { c.s.redis.Start(c.t) })
	}},
	{"redis frozen", isUp("redis"), func(c *chaos) {
		c.freeze("redis", c.between(time.Second, 8*time.Second), c.s.redis.PID())
	}},
	{"fan-out streams deleted", isUp("redis"), func(c *chaos) {
		n, err := c.s.rdb.Del(context.Background(), message.FanoutStreams(c.s.prefix)...).Result()
		if err != nil {
			c.t.Fatalf("delete streams: %v", err)
		}
		c.logf("%d fan-out streams deleted", n)
	}},
	{"postgres stopped", isUp("postgres"), func(c *chaos) {
		d := c.between(2*time.Second, 8*time.Second)
		c.logf("postgres: fast shutdown")
		c.s.pg.Stop()
		c.takeDown("postgres", d, c.s.pg.Start)
	}},
	{"postgres frozen", isUp("postgres"), func(c *chaos) {
		d := c.between(time.Second, 8*time.Second)
		c.logf("postgres: SIGSTOP to the postmaster and its children")
		c.takeDown("postgres", d, c.s.pg.Freeze(c.t))
	}},
	{"postgres connections terminated", isUp("postgres"), func(c *chaos) {
		c.logf("%d postgres connections terminated", c.terminateConnections())
	}},
}

func gatewaysUp(c *chaos) bool { return len(c.procsUp(true)) > 0 }
func workersUp(c *chaos) bool  { return len(c.procsUp(false)) > 0 }
func isUp(name string) func(*chaos) bool {
	return func(c *chaos) bool { return c.up(name) }
}

// fault starts one fault on something that is up: every kind once, in a
// random order, then kinds at random.
func (c *chaos) fault() {
	c.t.Helper()
	if c.pending == nil {
		c.pending = c.rng.Perm(len(chaosKinds))
	}
	var able []int
	for _, k := range c.pending {
		if chaosKinds[k].able(c) {
			able = append(able, k)
			break
		}
	}
	if len(able) == 0 {
		for k, kind := range chaosKinds {
			if kind.able(c) {
				able = append(able, k)
			}
		}
	}
	if len(able) == 0 {
		return
	}
	k := able[c.rng.IntN(len(able))]
	if i := slices.Index(c.pending, k); i >= 0 {
		c.pending = slices.Delete(c.pending, i, i+1)
	}
	c.counts[chaosKinds[k].name]++
	chaosKinds[k].do(c)
}

func (c *chaos) up(name string) bool { _, ok := c.down[name]; return !ok }

// procsUp are the gateways (or workers) that are up.
func (c *chaos) procsUp(gateways bool) []*proc {
	ps := c.s.workers
	if gateways {
		ps = c.s.gateways
	}
	var up []*proc
	for _, p := range ps {
		if c.up(p.Name) {
			up = append(up, p)
		}
	}
	return up
}

// stopProc stops a gateway (or a worker) that is up with sig, for 1–5 s.
func (c *chaos) stopProc(gateway bool, sig syscall.Signal) {
	c.t.Helper()
	ps := c.procsUp(gateway)
	p := ps[c.rng.IntN(len(ps))]
	d := c.between(time.Second, 5*time.Second)
	c.logf("%s: %v", p.Name, sig)
	err := p.Stop(c.t, sig)
	c.logf("%s exited: %v", p.Name, err)
	c.takeDown(p.Name, d, func() {
		if gateway {
			// A gateway is ready only with PostgreSQL, Redis and the
			// broker up: those are healed first if they are down.
			for _, n := range infra {
				c.heal(n)
			}
		}
		p.Start(c.t)
	})
}

// freezeProc freezes a gateway (or a worker) that is up, for 1–15 s.
func (c *chaos) freezeProc(gateway bool) {
	c.t.Helper()
	ps := c.procsUp(gateway)
	p := ps[c.rng.IntN(len(ps))]
	c.freeze(p.Name, c.between(time.Second, 15*time.Second), p.PID())
}

// freeze stops the processes pids (SIGSTOP) and marks name down for d; the
// heal lets them go on (SIGCONT).
func (c *chaos) freeze(name string, d time.Duration, pids ...int) {
	c.t.Helper()
	if len(pids) == 0 || slices.Contains(pids, 0) {
		c.t.Fatalf("freeze %s: no process (%v)", name, pids)
	}
	c.logf("%s: SIGSTOP to %d processes", name, len(pids))
	c.takeDown(name, d, testenv.Freeze(c.t, pids...))
}

// terminateConnections ends every session of the test's database.
func (c *chaos) terminateConnections() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, c.s.pg.DSN("postgres"))
	if err != nil {
		c.t.Fatalf("connect to terminate sessions: %v", err)
	}
	defer admin.Close(ctx)
	n, err := terminateSessions(ctx, admin, c.s.db.Name)
	if err != nil {
		c.t.Fatalf("terminate sessions: %v", err)
	}
	return n
}
