//go:build faults

package faults

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"rooms/shared/testenv"
)

// killAt arms a failpoint in worker-1 (ROOMS_FAILPOINT, see
// worker/internal/consume/failpoint.go), runs a workload until worker-1 has
// killed itself there, checks the offsets while it is dead, restarts it
// without the failpoint and checks everything.
func killAt(t *testing.T, failpoint string) {
	r := record(t)
	s := newStack(t, stackOpts{noWorkers: true})
	victim := s.workers[0]
	plain := append([]string{}, victim.Env...)
	victim.Env = append(victim.Env, "ROOMS_FAILPOINT="+failpoint)
	// worker-1 first, so it surely gets partitions of the rebalance that
	// worker-2's join starts.
	victim.Start(t)
	testenv.WaitFor(t, "worker-1 assigned", time.Minute, victim.Exited(), func() bool { return victim.LogCount("partitions assigned") > 0 })
	s.workers[1].Start(t)
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(80, 20*time.Millisecond, 20*time.Second, 4*time.Minute)
	var killed time.Time
	select {
	case <-victim.Exited():
		killed = time.Now()
	case <-time.After(40 * time.Second):
		h := 0
		for _, c := range w.senders {
			h += len(c.history())
		}
		t.Fatalf("worker-1 did not reach failpoint %s (%d stored, %d sent)", failpoint, len(s.storedRows(t)), h)
	}
	if err := victim.Stop(t, syscall.SIGKILL); err == nil || err.Error() != "signal: killed" {
		t.Fatalf("worker-1 exit: %v, want killed by SIGKILL", err)
	}
	// The dead worker's batch is in PostgreSQL (after-commit) or rolled
	// back (in-tx); either way no offset may be ahead of the database.
	s.checkOffsets(t)
	time.Sleep(2 * time.Second)
	victim.Env = plain
	victim.Start(t)
	w.verify(t, r, 3*time.Minute, "kill", killed)
}

// TestFaultWorkerKilledAfterCommit kills a worker after a batch's
// transaction committed, before the batch went to Redis and before its
// offsets were stored: the next owner of the partition redoes the batch,
// which de-duplication makes harmless, and re-broadcasts it.
func TestFaultWorkerKilledAfterCommit(t *testing.T) { killAt(t, "after-commit:15") }

// TestFaultWorkerKilledInTransaction kills a worker inside a batch's
// transaction (rows inserted, not committed): nothing of it is stored, and
// the next owner stores it once.
func TestFaultWorkerKilledInTransaction(t *testing.T) { killAt(t, "in-tx:15") }

// freezeAt arms a failpoint that freezes worker-1 (SIGSTOP) at a point of a
// batch, runs a workload until it froze there, and keeps it frozen, its
// connections open and silent, as a machine that pauses or a network that
// drops everything would leave it. While it is frozen, worker-2 must take
// over: every message acked within the first second of the freeze gets
// stored, and the time that takes is recorded. Then worker-1 goes on
// (SIGCONT) as a zombie: it still holds its batch and believes it owns its
// partitions. Whatever it does then must not lose, double or reorder a
// message, nor move a committed offset past the database.
func freezeAt(t *testing.T, failpoint string) {
	r := record(t)
	s := newStack(t, stackOpts{noWorkers: true})
	victim := s.workers[0]
	victim.Env = append(victim.Env, "ROOMS_FAILPOINT="+failpoint+":stop")
	victim.Start(t)
	testenv.WaitFor(t, "worker-1 assigned", time.Minute, victim.Exited(), func() bool { return victim.LogCount("partitions assigned") > 0 })
	s.workers[1].Start(t)
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(1_000_000, 20*time.Millisecond, 20*time.Second, 5*time.Minute)
	testenv.WaitFor(t, "worker-1 frozen at "+failpoint, 40*time.Second, victim.Exited(), victim.Frozen)
	frozen := time.Now()
	// Stopped by its failpoint already; Freeze gives the thaw, and thaws
	// it if the test ends first.
	thaw := testenv.Freeze(t, victim.PID())

	time.Sleep(time.Second)
	if strings.HasPrefix(failpoint, "in-tx") {
		// The freeze holds a transaction open: a session idle in one for
		// a second can only be worker-1's (a running batch is idle in its
		// transaction for well under a millisecond). It may hold more than
		// one, when a batch it stores on its own runs beside a combined
		// transaction.
		var n int
		if err := s.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND state = 'idle in transaction' AND now() - state_change > interval '900 ms'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n < 1 {
			t.Fatalf("no session idle in a transaction for a second after worker-1 froze at %s", failpoint)
		}
	}
	acked := w.ackedKeys()
	taken := time.Now()
	eventually(t, "every message acked in the freeze's first second stored while worker-1 is frozen", time.Minute, func() bool {
		if !victim.Frozen() {
			t.Fatal("worker-1 is no longer frozen")
		}
		stored := 0
		for _, row := range s.storedRows(t) {
			if acked[fmt.Sprintf("%d/%d/%s", row.room, row.user, row.cmid)] {
				stored++
			}
		}
		return stored == len(acked)
	})
	took := time.Since(frozen)
	r.measure("stored_while_frozen_s", took.Seconds())
	t.Logf("%d messages acked by %.1fs into the freeze, all stored by worker-2 %.1fs into it", len(acked), taken.Sub(frozen).Seconds(), took.Seconds())

	// Frozen a little longer, so that more passes worker-1 by.
	time.Sleep(2 * time.Second)
	thaw()
	woke := time.Now()
	r.measure("frozen_s", woke.Sub(frozen).Seconds())
	// The zombie's next moves: its store retried, its offsets refused or
	// its partitions revoked.
	testenv.WaitFor(t, "worker-1 back in the group", time.Minute, victim.Exited(), func() bool {
		return victim.LogCount("partitions assigned") > 1
	})
	time.Sleep(3 * time.Second)
	w.stop()
	w.verify(t, r, 3*time.Minute, "wake", woke)
	t.Logf("worker-1 after waking: %d failed store tries logged, assignment lost %d times, partitions assigned %d times",
		victim.LogCount("store batch failed"), victim.LogCount("assignment lost"), victim.LogCount("partitions assigned"))
}

// TestFaultWorkerFrozenInTransaction freezes a worker inside a batch's
// transaction: its rows are inserted, not committed, and its rooms' row
// locks are held. The other worker gets the partitions when the frozen
// one's group session times out, and the rooms' locks when PostgreSQL ends
// the idle transaction (shared/config.PostgresSessionDefaults); without that
// timeout those rooms would stall for as long as the freeze lasts.
func TestFaultWorkerFrozenInTransaction(t *testing.T) { freezeAt(t, "in-tx:15") }

// TestFaultWorkerFrozenAfterCommit freezes a worker after a batch's
// transaction committed, before the batch went to Redis and its offsets
// were stored. The other worker redoes the batch (de-duplicated) and goes
// on; the zombie, woken, appends its stale batch to the fan-out streams
// after newer messages, which the gateways must drop or repair around.
func TestFaultWorkerFrozenAfterCommit(t *testing.T) { freezeAt(t, "after-commit:15") }

// TestFaultWorkerStoppedWhileBrokerFrozen sends SIGTERM to worker-1 while
// the broker is frozen (SIGSTOP): the worker can neither commit its
// offsets nor leave the group, and must still stop within its shutdown
// deadline (SHUTDOWN_TIMEOUT, 20 s here) instead of waiting on the broker
// (its commit alone used to wait for librdkafka's 60 s socket timeout).
// Thawed, the broker hands worker-1's partitions to worker-2 after the
// session timeout, which redoes what was not committed: nothing is lost
// or stored twice (checker 1–5).
func TestFaultWorkerStoppedWhileBrokerFrozen(t *testing.T) {
	r := record(t)
	s := newStack(t, stackOpts{})
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(1_000_000, 100*time.Millisecond, 20*time.Second, 4*time.Minute)
	time.Sleep(3 * time.Second)
	thaw := testenv.Freeze(t, s.broker.PID())
	victim := s.workers[0]
	stopped := time.Now()
	if err := victim.Stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("worker-1 exit after SIGTERM: %v, want status 0", err)
	}
	took := time.Since(stopped)
	r.recovery("sigterm_to_exit", took)
	if took > 40*time.Second {
		t.Errorf("worker-1 took %.1fs to stop with the broker frozen, want its SHUTDOWN_TIMEOUT (20 s) and some slack", took.Seconds())
	}
	thaw()
	healed := time.Now()
	w.stop()
	w.verify(t, r, 3*time.Minute, "thaw", healed)
	t.Logf("worker-1 stopped %.1fs after SIGTERM with the broker frozen", took.Seconds())
}
