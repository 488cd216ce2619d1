package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"rooms/shared/retry"
)

// Combiner stores the batches that several partitions hand it at about the
// same time in one transaction. While one combined transaction runs, the
// batches that arrive queue up and go into the next one, so under load a
// worker commits a few large transactions instead of one small one per
// partition and batch (each transaction costs the same handful of round
// trips and a WAL flush whatever its size), and at low load a batch waits
// for nothing.
//
// Only the happy path is combined: a combined transaction is tried once,
// and when it fails every batch in it is stored again by its own caller
// through Store.Save, with that method's retries, one-by-one fallback and
// dead letters, exactly as without the Combiner. Each caller gets back the
// part of the result that answers its own records.
//
// Batches from different partitions never share a room (records are keyed
// by room), so splitting the result by record is splitting it by room, and
// each room's rows keep the order of its partition.
type Combiner struct {
	s          *Store
	maxRecords int
	interval   time.Duration
	lastStart  time.Time // of the latest round; only run touches it

	mu      sync.Mutex
	queue   []*combineCall
	running bool
}

type combineCall struct {
	ctx  context.Context
	recs []Record
	res  Result
	// own is set when the call must be stored by its caller (the combined
	// transaction failed).
	own  bool
	done chan struct{}
}

// NewCombiner returns a Combiner over s putting at most maxRecords records
// (at least one whole batch) into one transaction (default 2000) and
// starting a transaction at most once per interval: a batch that arrives
// sooner after the previous start waits for the rest of the interval, so
// that the batches of all partitions (which a fetch delivers together) share
// one transaction. A batch arriving after a quiet interval starts at once.
func NewCombiner(s *Store, maxRecords int, interval time.Duration) *Combiner {
	if maxRecords <= 0 {
		maxRecords = 2000
	}
	return &Combiner{s: s, maxRecords: maxRecords, interval: max(interval, 0)}
}

// Save stores recs, combined with whatever other batches are waiting, and
// returns what was stored for recs. Like Store.Save it returns an error only
// when ctx ends first; a batch whose caller gave up may still be stored,
// which the store's de-duplication makes harmless when it is redelivered.
func (c *Combiner) Save(ctx context.Context, recs []Record) (Result, error) {
	if len(recs) == 0 {
		return Result{}, nil
	}
	call := &combineCall{ctx: ctx, recs: recs, done: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, call)
	if !c.running {
		c.running = true
		go c.run()
	}
	c.mu.Unlock()
	select {
	case <-call.done:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	if call.own {
		return c.s.Save(ctx, recs)
	}
	return call.res, nil
}

// run stores queued calls, a round at a time, until the queue is empty.
func (c *Combiner) run() {
	for {
		if wait := time.Until(c.lastStart.Add(c.interval)); wait > 0 {
			time.Sleep(wait)
		}
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		n, records := 0, 0
		for n < len(c.queue) && (n == 0 || records+len(c.queue[n].recs) <= c.maxRecords) {
			records += len(c.queue[n].recs)
			n++
		}
		round := make([]*combineCall, n)
		copy(round, c.queue)
		c.queue = append(c.queue[:0], c.queue[n:]...)
		c.mu.Unlock()
		c.lastStart = time.Now()
		c.store(round)
	}
}

// store writes one round in one transaction, once; on failure each call is
// handed back to its caller.
func (c *Combiner) store(round []*combineCall) {
	defer func() {
		for _, call := range round {
			close(call.done)
		}
	}()
	// The round runs under the first live caller's context: when that
	// caller gives up, the write fails and the others store their own.
	var ctx context.Context
	var recs []Record
	var first []int // first[i]: index in recs of round[i]'s first record
	for _, call := range round {
		if ctx == nil && call.ctx.Err() == nil {
			ctx = call.ctx
		}
		first = append(first, len(recs))
		recs = append(recs, call.recs...)
	}
	if ctx == nil {
		return // every caller has gone
	}
	w, err := c.s.writeTagged(ctx, recs, 1)
	if err != nil {
		if c.s.opts.OnRetry != nil && ctx.Err() == nil {
			c.s.opts.OnRetry(fmt.Errorf("combined transaction of %d batches: %w", len(round), err), retry.Transient(err), 0)
		}
		for _, call := range round {
			call.own = true
		}
		return
	}
	owner := func(idx int) *combineCall {
		i := len(first) - 1
		for first[i] > idx {
			i--
		}
		return round[i]
	}
	for i, m := range w.msgs {
		r := &owner(w.owners[i]).res
		r.Messages = append(r.Messages, m)
	}
	for _, idx := range w.inserted {
		owner(idx).res.Inserted++
	}
	for _, idx := range w.dead {
		owner(idx).res.DeadLetters++
	}
}

// Queued is how many batches wait for the next round (for tests and
// metrics).
func (c *Combiner) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}
