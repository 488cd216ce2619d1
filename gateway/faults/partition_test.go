//go:build faults

package faults

import (
	"net/url"
	"strconv"
	"testing"
	"time"

	"rooms/shared/testenv"
)

// TestFaultWorkerCutOffFromPostgres cuts worker-1 off from PostgreSQL
// while messages flow: its connections to the database go through a TCP
// proxy that stops passing bytes and leaves them open (a network partition
// between one worker and the database, not a database outage: worker-2
// and the gateways still reach it). Worker-1 still reaches the broker and
// would keep its partitions, and its rooms would stall for as long as the
// cut lasts. With STEP_ASIDE_AFTER (5 s here) it leaves the consumer
// group, worker-2 takes every partition, and every room is stored again
// while worker-1 is still cut off. Healed, worker-1 joins again. Nothing is
// lost, stored twice or reordered (checker 1–5).
func TestFaultWorkerCutOffFromPostgres(t *testing.T) { workerCutOff(t, "postgres") }

// TestFaultWorkerCutOffFromRedis is the same with worker-1 cut off from
// Redis: it can store a batch but not broadcast it, so it stores no
// further batch of its partitions (one batch at a time per partition, its
// offsets stored only after the broadcast) until worker-2 has taken them.
func TestFaultWorkerCutOffFromRedis(t *testing.T) { workerCutOff(t, "redis") }

func workerCutOff(t *testing.T, from string) {
	r := record(t)
	s := newStack(t, stackOpts{noWorkers: true, workerEnv: []string{"STEP_ASIDE_AFTER=5s"}})
	victim, other := s.workers[0], s.workers[1]
	var proxy *testenv.Proxy
	switch from {
	case "postgres":
		dsn, err := url.Parse(s.db.DSN)
		if err != nil {
			t.Fatal(err)
		}
		proxy = testenv.StartProxy(t, dsn.Host)
		dsn.Host = proxy.Addr
		victim.Env = append(victim.Env, "DATABASE_URL="+dsn.String())
	case "redis":
		proxy = testenv.StartProxy(t, testenv.RedisAddr())
		victim.Env = append(victim.Env, "REDIS_ADDR="+proxy.Addr)
	default:
		t.Fatalf("cut off from %q", from)
	}
	victim.Start(t)
	testenv.WaitFor(t, "worker-1 assigned", time.Minute, victim.Exited(), func() bool { return victim.LogCount("partitions assigned") > 0 })
	other.Start(t)
	testenv.WaitFor(t, "worker-2 assigned", time.Minute, other.Exited(), func() bool { return other.LogCount("partitions assigned") > 0 })
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(1_000_000, 100*time.Millisecond, 20*time.Second, 4*time.Minute)
	time.Sleep(3 * time.Second)

	proxy.Cut()
	cut := time.Now()
	testenv.WaitFor(t, "worker-1 leaves the consumer group", time.Minute, victim.Exited(), func() bool {
		return victim.LogCount("leaving the consumer group") > 0
	})
	aside := time.Now()
	r.recovery("cut_to_step_aside", aside.Sub(cut))
	before := s.storedPerRoom(t)
	testenv.WaitFor(t, "every room stored again while worker-1 is cut off", time.Minute, nil, func() bool {
		now := s.storedPerRoom(t)
		for _, room := range w.rooms {
			if now[room] <= before[room] {
				return false
			}
		}
		return true
	})
	r.recovery("cut_to_every_room_stored", time.Since(cut))
	if n := victim.LogCount("joining the consumer group"); n != 0 {
		t.Fatalf("worker-1 joined the group again while still cut off (%d times)", n)
	}

	proxy.Heal()
	healed := time.Now()
	testenv.WaitFor(t, "worker-1 joins the consumer group again", time.Minute, victim.Exited(), func() bool {
		return victim.LogCount("joining the consumer group") > 0
	})
	r.recovery("heal_to_rejoin", time.Since(healed))
	w.stop()
	w.verify(t, r, 3*time.Minute, "heal", healed)
	t.Logf("cut off from %s: worker-1 left the group %.1fs after the cut (%d time(s))", from, aside.Sub(cut).Seconds(), victim.LogCount("leaving the consumer group"))
}

// TestFaultGatewayCutOffFromRedis cuts gw-1 off from Redis (a
// testenv.Proxy, as above) while messages flow. Its fan-out reader can
// read nothing, so its clients, still connected, would get no message
// until the cut heals. With STEP_ASIDE_AFTER (5 s here) gw-1 closes its
// WebSockets with 1001 and refuses new ones with 503; its clients
// reconnect to gw-2 and every client receives messages again while gw-1
// is still cut off. Healed, gw-1 accepts WebSockets again. Nothing is lost,
// stored twice or reordered, and every client ends with its room's whole
// sequence (checker 1–5).
func TestFaultGatewayCutOffFromRedis(t *testing.T) {
	r := record(t)
	proxy := testenv.StartProxy(t, testenv.RedisAddr())
	s := newStack(t, stackOpts{gatewayEnv: []string{"STEP_ASIDE_AFTER=5s"}, firstGatewayEnv: []string{"REDIS_ADDR=" + proxy.Addr}})
	gw1 := s.gateways[0]
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(1_000_000, 100*time.Millisecond, 20*time.Second, 4*time.Minute)
	time.Sleep(3 * time.Second)

	proxy.Cut()
	cut := time.Now()
	testenv.WaitFor(t, "gw-1 closes its WebSockets", time.Minute, gw1.Exited(), func() bool {
		return gw1.LogCount("closing this gateway's WebSockets") > 0
	})
	aside := time.Now()
	r.recovery("cut_to_step_aside", aside.Sub(cut))
	before := map[*client]int{}
	for _, c := range w.all {
		before[c] = len(c.delivered())
	}
	testenv.WaitFor(t, "every client receives messages again while gw-1 is cut off", time.Minute, nil, func() bool {
		for _, c := range w.all {
			if len(c.delivered()) <= before[c] {
				return false
			}
		}
		return true
	})
	r.recovery("cut_to_every_client_delivered", time.Since(cut))
	if n := gw1.LogCount("WebSockets again") + gw1.LogCount("accepting WebSockets"); n != 0 {
		t.Fatalf("gw-1 accepted WebSockets again while still cut off (%d times)", n)
	}

	proxy.Heal()
	healed := time.Now()
	testenv.WaitFor(t, "gw-1 accepts WebSockets again", time.Minute, gw1.Exited(), func() bool {
		return gw1.LogCount("fan-out reads Redis again") > 0
	})
	r.recovery("heal_to_accepting", time.Since(healed))
	w.stop()
	w.verify(t, r, 3*time.Minute, "heal", healed)
	t.Logf("gw-1 stepped aside %.1fs after the cut", aside.Sub(cut).Seconds())
}

// storedPerRoom counts the stored messages of each room (by room id).
func (s *stack) storedPerRoom(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, row := range s.storedRows(t) {
		out[strconv.FormatInt(row.room, 10)]++
	}
	return out
}
