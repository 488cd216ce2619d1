//go:build faults

package faults

import (
	"syscall"
	"testing"
	"time"
)

// brokerDown stops the broker for down while the workload runs, with the
// gateways' producer message timeout set to msgTimeout.
func brokerDown(t *testing.T, down, msgTimeout time.Duration) (*workload, *result) {
	r := record(t)
	s := newStack(t, stackOpts{gatewayEnv: []string{"KAFKA_MESSAGE_TIMEOUT=" + msgTimeout.String()}})
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(60, 100*time.Millisecond, msgTimeout+10*time.Second, 4*time.Minute)
	time.Sleep(2 * time.Second)
	if err := s.broker.Stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("broker stop: %v", err)
	}
	stopped := time.Now()
	time.Sleep(down)
	s.broker.Start(t)
	healed := time.Now()
	r.measure("broker_down_s", healed.Sub(stopped).Seconds())
	w.verify(t, r, 3*time.Minute, "broker_restart", healed)
	return w, r
}

// TestFaultBrokerDownShorterThanMessageTimeout stops the broker for less
// than the producer's message timeout: sends are delayed, never refused.
func TestFaultBrokerDownShorterThanMessageTimeout(t *testing.T) {
	_, r := brokerDown(t, 3*time.Second, 20*time.Second)
	if r.Unknown != 0 || r.GaveUp != 0 {
		t.Fatalf("%d messages had an unknown outcome, %d never acked: a short outage must only delay", r.Unknown, r.GaveUp)
	}
}

// TestFaultBrokerDownLongerThanMessageTimeout stops the broker for longer
// than the producer's message timeout: senders get "unavailable" with
// their client_msg_id, retry with the same id, and every message ends up
// acked and stored once.
func TestFaultBrokerDownLongerThanMessageTimeout(t *testing.T) {
	_, r := brokerDown(t, 15*time.Second, 5*time.Second)
	if r.Unknown == 0 {
		t.Fatal("no send saw an unknown outcome: the outage did not outlast the message timeout")
	}
	if r.GaveUp != 0 {
		t.Fatalf("%d messages never acked despite retries", r.GaveUp)
	}
}

// TestFaultProducerQueueFull stops the broker and bursts sends into a tiny
// producer queue (KAFKA_QUEUE_MAX=20): the overflow is refused at once with
// "unavailable" and its client_msg_id (backpressure), the gateway's memory
// stays bounded, and after the broker is back every message is retried to
// an ack and stored once.
func TestFaultProducerQueueFull(t *testing.T) {
	r := record(t)
	s := newStack(t, stackOpts{gatewayEnv: []string{"KAFKA_QUEUE_MAX=20", "KAFKA_MESSAGE_TIMEOUT=60s"}})
	w := newWorkload(t, s, workloadOpts{rooms: 4, senders: 1, readers: 1})
	if err := s.broker.Stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("broker stop: %v", err)
	}
	const burst = 150
	type pending struct {
		c   *client
		o   *op
		res <-chan string
	}
	var all []pending
	for _, c := range w.senders {
		for k := 0; k < burst; k++ {
			o := c.newOp(k)
			o.Burst = true
			all = append(all, pending{c, o, c.attempt(o.CMID, c.content(o))})
		}
	}
	// The queue holds 20 per gateway; the rest must be refused at once,
	// long before the 60 s message timeout.
	refused := 0
	var maxRSS float64
	deadline := time.After(30 * time.Second)
	for i, p := range all {
		select {
		case out := <-p.res:
			p.c.note(p.o, out)
			if out == outError {
				refused++
			}
		case <-time.After(200 * time.Millisecond):
			// Still queued: the outcome comes after the broker is back.
			all[i].res = p.res
			continue
		case <-deadline:
			t.Fatal("bounded wait for refusals exceeded")
		}
		for _, g := range s.gateways {
			maxRSS = max(maxRSS, g.RSSMB())
		}
	}
	queued := len(all) - refused
	t.Logf("broker down: %d sends, %d refused at once (queue full), %d queued; gateway RSS max %.0f MB", len(all), refused, queued, maxRSS)
	if refused == 0 || queued > 2*20+len(w.senders) {
		t.Fatalf("%d refused, %d queued: want the queue (20 per gateway) full and the rest refused", refused, queued)
	}
	if maxRSS > 500 {
		t.Fatalf("gateway RSS %.0f MB while the queue is full, want under 500 MB", maxRSS)
	}
	r.measure("refused_at_once", float64(refused))
	r.measure("queued_while_down", float64(queued))
	r.measure("gateway_rss_max_mb", maxRSS)
	s.broker.Start(t)
	healed := time.Now()
	// Queued sends are delivered now; refused ones are retried with the
	// same client_msg_id.
	for _, p := range all {
		if len(p.o.Attempts) == 0 {
			select {
			case out := <-p.res:
				p.c.note(p.o, out)
			case <-time.After(90 * time.Second):
				p.c.forget(p.o.CMID)
				p.c.note(p.o, outNone)
			}
		}
	}
	for _, p := range all {
		if !p.o.Acked {
			p.c.retry(p.o, 20, 30*time.Second, time.Now().Add(2*time.Minute))
		}
	}
	w.finish(t, 3*time.Minute)
	w.check(t, r)
	if r.GaveUp != 0 {
		t.Fatalf("%d messages never acked despite retries", r.GaveUp)
	}
	s.waitCommitted(t, time.Minute)
	s.checkOffsets(t)
	w.recoveries(t, r, "broker_restart", healed)
}
