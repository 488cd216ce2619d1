//go:build faults

package faults

import (
	"context"
	"syscall"
	"testing"
	"time"

	"rooms/shared/message"
)

// TestFaultRedisStoppedAndDataLost stops Redis (a private server without
// persistence) for 15 s while messages flow and starts it again empty: the
// fan-out streams and everything else in Redis are gone. Workers retry their
// broadcasts, gateways resume reading, and every gap is repaired from
// PostgreSQL. The gateways run with STEP_ASIDE_AFTER=5s, and neither
// steps aside: no gateway reads Redis, so closing the sockets would only
// stop the sends, which still reach Kafka and are acked.
func TestFaultRedisStoppedAndDataLost(t *testing.T) {
	r := record(t)
	s := newStack(t, stackOpts{privateRedis: true, gatewayEnv: []string{"STEP_ASIDE_AFTER=5s"}})
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(80, 250*time.Millisecond, 20*time.Second, 4*time.Minute)
	time.Sleep(3 * time.Second)
	if err := s.redis.Stop(t, syscall.SIGKILL); err != nil && err.Error() != "signal: killed" {
		t.Fatalf("redis stop: %v", err)
	}
	stopped := time.Now()
	time.Sleep(15 * time.Second)
	s.redis.Start(t)
	healed := time.Now()
	r.measure("redis_down_s", healed.Sub(stopped).Seconds())
	w.verify(t, r, 3*time.Minute, "redis_restart", healed)
	var closes []int
	for _, c := range w.all {
		c.mu.Lock()
		closes = append(closes, c.closeCodes...)
		c.mu.Unlock()
	}
	t.Logf("socket closes during the test: %v", closes)
	for _, g := range s.gateways {
		if n := g.LogCount("closing this gateway's WebSockets"); n != 0 {
			t.Errorf("%s stepped aside %d times while no gateway could read Redis", g.Name, n)
		}
	}
}

// TestFaultRedisStreamsDeleted deletes the fan-out streams three times
// while messages flow (entries appended but not yet read are lost):
// gateways notice the seq jumps and backfill from PostgreSQL.
func TestFaultRedisStreamsDeleted(t *testing.T) {
	r := record(t)
	s := newStack(t, stackOpts{})
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(60, 100*time.Millisecond, 20*time.Second, 4*time.Minute)
	deleted := int64(0)
	var last time.Time
	for i := 0; i < 3; i++ {
		time.Sleep(2 * time.Second)
		n, err := s.rdb.Del(context.Background(), message.FanoutStreams(s.prefix)...).Result()
		if err != nil {
			t.Fatalf("delete streams: %v", err)
		}
		deleted += n
		last = time.Now()
	}
	r.measure("streams_deleted", float64(deleted))
	w.verify(t, r, 3*time.Minute, "last_delete", last)
	t.Logf("deleted %d streams in 3 rounds", deleted)
}
