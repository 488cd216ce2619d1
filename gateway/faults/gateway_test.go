//go:build faults

package faults

import (
	"syscall"
	"testing"
	"time"
)

// gatewayStopped stops gw-1 with sig while messages flow; its clients
// reconnect (jittered backoff) and resume on gw-2. gw-1 is started again.
func gatewayStopped(t *testing.T, sig syscall.Signal, wantCode int) {
	r := record(t)
	s := newStack(t, stackOpts{})
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	var onFirst []*client
	for _, c := range w.all {
		if c.gw == 0 {
			onFirst = append(onFirst, c)
		}
	}
	w.run(80, 100*time.Millisecond, 20*time.Second, 4*time.Minute)
	time.Sleep(3 * time.Second)
	err := s.gateways[0].Stop(t, sig)
	stopped := time.Now()
	if sig == syscall.SIGTERM && err != nil {
		t.Fatalf("gw-1 exit after SIGTERM: %v", err)
	}
	time.Sleep(3 * time.Second)
	s.gateways[0].Start(t)
	w.finish(t, 3*time.Minute)
	w.check(t, r)
	s.waitCommitted(t, time.Minute)
	s.checkOffsets(t)
	for _, c := range onFirst {
		c.mu.Lock()
		codes := append([]int{}, c.closeCodes...)
		c.mu.Unlock()
		if len(codes) == 0 || codes[0] != wantCode {
			t.Fatalf("%s (on gw-1) saw closes %v, want first %d", c.name, codes, wantCode)
		}
	}
	w.recoveries(t, r, "gateway_stop", stopped)
}

// TestFaultGatewaySIGTERM drains a gateway under load: its sockets are
// closed with 1001, its producer flushed (every ack it gave is stored), and
// its clients resume on the other gateway without a gap.
func TestFaultGatewaySIGTERM(t *testing.T) { gatewayStopped(t, syscall.SIGTERM, 1001) }

// TestFaultGatewaySIGKILL kills a gateway under load: its clients see the
// connection drop (1006), retry the sends whose outcome is unknown with the
// same client_msg_id, and resume on the other gateway.
func TestFaultGatewaySIGKILL(t *testing.T) { gatewayStopped(t, syscall.SIGKILL, 1006) }

// TestFaultReconnectStorm has 300 clients in 3 rooms: one gateway is
// killed (half the clients reconnect at once to the other), started
// again, then the other is drained (nearly all reconnect at once). Clients
// use jittered, capped backoff and resume with since_seq.
func TestFaultReconnectStorm(t *testing.T) {
	r := record(t)
	s := newStack(t, stackOpts{})
	w := newWorkload(t, s, workloadOpts{rooms: 3, senders: 2, readers: 98, users: 30})
	w.run(60, 200*time.Millisecond, 20*time.Second, 4*time.Minute)
	time.Sleep(2 * time.Second)
	_ = s.gateways[0].Stop(t, syscall.SIGKILL)
	first := time.Now()
	time.Sleep(3 * time.Second)
	s.gateways[0].Start(t)
	time.Sleep(2 * time.Second)
	if err := s.gateways[1].Stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("gw-2 exit after SIGTERM: %v", err)
	}
	second := time.Now()
	time.Sleep(2 * time.Second)
	s.gateways[1].Start(t)
	w.verify(t, r, 4*time.Minute, "first_storm", first)
	w.recoveries(t, r, "second_storm", second)
}
