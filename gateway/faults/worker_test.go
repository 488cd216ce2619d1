//go:build faults

package faults

import (
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
	w.finish(t, 3*time.Minute)
	w.check(t, r)
	s.waitCommitted(t, time.Minute)
	s.checkOffsets(t)
	w.recoveries(t, r, "kill", killed)
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
