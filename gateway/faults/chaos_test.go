//go:build faults

package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"rooms/shared/message"
)

// TestFaultChaos runs the suite's faults together: for FAULTS_CHAOS_TIME
// (default 60 s) while messages flow, a seeded random schedule kills,
// stops and restarts gateways, workers, the broker, Redis (which comes back
// empty) and PostgreSQL, terminates the database's connections and deletes
// the fan-out streams, with up to three faults at a time. Every kind of
// fault comes at least once (the first nine in a random order), then
// kinds at random. Each of the other
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
		gatewayEnv: []string{"KAFKA_MESSAGE_TIMEOUT=10s"}})
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(1_000_000, 100*time.Millisecond, 20*time.Second, length+5*time.Minute)
	time.Sleep(2 * time.Second)

	c := newChaos(t, s, seed)
	c.run(length)
	c.healAll()
	healed := time.Now()
	w.stop()
	r.measure("chaos_seed", float64(seed))
	faults := 0
	for _, n := range c.counts {
		faults += n
	}
	r.measure("chaos_faults", float64(faults))
	t.Logf("chaos: %d faults in %v, at most %d at a time: %v", faults, length, c.maxDown, c.counts)

	w.finish(t, 4*time.Minute)
	w.check(t, r)
	s.waitCommitted(t, time.Minute)
	s.checkOffsets(t)
	w.recoveries(t, r, "chaos_end", healed)
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
	pending []string // kinds not yet drawn
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

// heal brings name back. A gateway is ready only with PostgreSQL, Redis
// and the broker up, so those are healed first if they are down.
func (c *chaos) heal(name string) {
	c.t.Helper()
	if _, ok := c.down[name]; !ok {
		return
	}
	if strings.HasPrefix(name, "gw-") {
		for _, n := range infra {
			c.heal(n)
		}
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

// chaosKinds are the faults a schedule draws from.
var chaosKinds = []string{
	"gateway SIGKILL", "gateway SIGTERM", "worker SIGKILL", "worker SIGTERM",
	"broker stopped", "redis killed", "postgres stopped",
	"postgres connections terminated", "fan-out streams deleted",
}

// fault starts one fault on something that is up: every kind once, in a
// random order, then kinds at random.
func (c *chaos) fault() {
	c.t.Helper()
	if c.pending == nil {
		c.pending = slices.Clone(chaosKinds)
		c.rng.Shuffle(len(c.pending), func(i, j int) { c.pending[i], c.pending[j] = c.pending[j], c.pending[i] })
	}
	var able []string
	for _, k := range c.pending {
		if c.able(k) {
			able = append(able, k)
			break
		}
	}
	if len(able) == 0 {
		for _, k := range chaosKinds {
			if c.able(k) {
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
	c.counts[k]++
	c.do(k)
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

// able reports whether fault kind k has something to act on.
func (c *chaos) able(k string) bool {
	switch k {
	case "gateway SIGKILL", "gateway SIGTERM":
		return len(c.procsUp(true)) > 0
	case "worker SIGKILL", "worker SIGTERM":
		return len(c.procsUp(false)) > 0
	case "broker stopped":
		return c.up("broker")
	case "redis killed", "fan-out streams deleted":
		return c.up("redis")
	default: // postgres stopped, postgres connections terminated
		return c.up("postgres")
	}
}

// do starts fault kind k.
func (c *chaos) do(k string) {
	c.t.Helper()
	s := c.s
	switch k {
	case "gateway SIGKILL", "gateway SIGTERM", "worker SIGKILL", "worker SIGTERM":
		ps := c.procsUp(strings.HasPrefix(k, "gateway"))
		p := ps[c.rng.IntN(len(ps))]
		sig := syscall.SIGKILL
		if strings.HasSuffix(k, "SIGTERM") {
			sig = syscall.SIGTERM
		}
		d := c.between(time.Second, 5*time.Second)
		c.logf("%s: %v", p.Name, sig)
		err := p.Stop(c.t, sig)
		c.logf("%s exited: %v", p.Name, err)
		c.takeDown(p.Name, d, func() { p.Start(c.t) })
	case "broker stopped":
		d := c.between(time.Second, 5*time.Second)
		c.logf("broker: SIGTERM")
		err := s.broker.Stop(c.t, syscall.SIGTERM)
		c.logf("broker exited: %v", err)
		c.takeDown("broker", d, func() { s.broker.Start(c.t) })
	case "redis killed":
		d := c.between(time.Second, 5*time.Second)
		c.logf("redis: SIGKILL (it comes back empty)")
		_ = s.redis.Stop(c.t, syscall.SIGKILL)
		c.takeDown("redis", d, func() { s.redis.Start(c.t) })
	case "postgres stopped":
		d := c.between(2*time.Second, 8*time.Second)
		c.logf("postgres: fast shutdown")
		s.pg.Stop()
		c.takeDown("postgres", d, s.pg.Start)
	case "postgres connections terminated":
		c.logf("%d postgres connections terminated", c.terminateConnections())
	case "fan-out streams deleted":
		n, err := s.rdb.Del(context.Background(), message.FanoutStreams(s.prefix)...).Result()
		if err != nil {
			c.t.Fatalf("delete streams: %v", err)
		}
		c.logf("%d fan-out streams deleted", n)
	default:
		c.t.Fatalf("unknown fault kind %q", k)
	}
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
