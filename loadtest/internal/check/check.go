// Package check verifies what the benchmark's clients received against what
// their rooms' senders had accepted: per room, expected vs received, no
// duplicates, per-sender order and seq contiguity on every connection.
//
// Every benchmark message carries its sender (an index within the room) and
// that sender's counter n (0, 1, 2, …). A Room records, per sender, which
// counters were acknowledged (accepted durably) or refused; a Receiver
// records, per connection, which (sender, n) it was delivered and the seqs it
// saw.
package check

import (
	"math/bits"
	"sync"
)

// Totals are the counters of one or more receivers. Lost counts acknowledged
// messages a receiver never got; Dups deliveries of a (sender, n) already
// delivered to that receiver; Reorders deliveries of a sender's message after
// a later one of the same sender; SeqGaps seqs skipped on a connection;
// SeqRepeats seqs not above the last one seen on a connection.
type Totals struct {
	Received   int64 `json:"received"`
	Expected   int64 `json:"expected"`
	Lost       int64 `json:"lost"`
	Dups       int64 `json:"duplicates"`
	Reorders   int64 `json:"reordered"`
	SeqGaps    int64 `json:"seq_gaps"`
	SeqRepeats int64 `json:"seq_repeats"`
}

// Add adds o to t.
func (t *Totals) Add(o Totals) {
	t.Received += o.Received
	t.Expected += o.Expected
	t.Lost += o.Lost
	t.Dups += o.Dups
	t.Reorders += o.Reorders
	t.SeqGaps += o.SeqGaps
	t.SeqRepeats += o.SeqRepeats
}

// Sub returns t minus o.
func (t Totals) Sub(o Totals) Totals {
	return Totals{
		Received: t.Received - o.Received, Expected: t.Expected - o.Expected,
		Lost: t.Lost - o.Lost, Dups: t.Dups - o.Dups, Reorders: t.Reorders - o.Reorders,
		SeqGaps: t.SeqGaps - o.SeqGaps, SeqRepeats: t.SeqRepeats - o.SeqRepeats,
	}
}

// Broken reports whether anything was lost, duplicated, reordered or skipped.
func (t Totals) Broken() bool {
	return t.Lost != 0 || t.Dups != 0 || t.Reorders != 0 || t.SeqGaps != 0 || t.SeqRepeats != 0
}

// bitset is a growable set of non-negative integers.
type bitset []uint64

func (b *bitset) set(n int) (already bool) {
	w := n / 64
	if w >= len(*b) {
		grown := make(bitset, w+1, 2*(w+1))
		copy(grown, *b)
		*b = grown
	}
	m := uint64(1) << (n % 64)
	already = (*b)[w]&m != 0
	(*b)[w] |= m
	return already
}

func (b bitset) has(n int) bool {
	w := n / 64
	return w < len(b) && b[w]&(uint64(1)<<(n%64)) != 0
}

// andNotCount counts the members of b that are not in o.
func (b bitset) andNotCount(o bitset) int64 {
	var c int
	for i, w := range b {
		if i < len(o) {
			w &^= o[i]
		}
		c += bits.OnesCount64(w)
	}
	return int64(c)
}

func (b bitset) count() int64 { return b.andNotCount(nil) }

// Room is the sending side of one room. It is safe for concurrent use.
type Room struct {
	mu    sync.Mutex
	acked []bitset // per sender
	// receivers are every connection's view of this room, for Totals.
	receivers []*Receiver
}

// NewRoom returns a Room whose messages come from senders senders
// (indexes 0..senders-1).
func NewRoom(senders int) *Room {
	return &Room{acked: make([]bitset, senders)}
}

// Acked records that sender's message n was accepted durably.
func (r *Room) Acked(sender, n int) {
	r.mu.Lock()
	r.acked[sender].set(n)
	r.mu.Unlock()
}

// AckedCount is the number of accepted messages.
func (r *Room) AckedCount() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var c int64
	for _, b := range r.acked {
		c += b.count()
	}
	return c
}

// NewReceiver returns the view of one connection (kept across its
// reconnects) of this room.
func (r *Room) NewReceiver() *Receiver {
	rc := &Receiver{room: r, got: make([]bitset, len(r.acked)), maxN: make([]int, len(r.acked))}
	for i := range rc.maxN {
		rc.maxN[i] = -1
	}
	r.mu.Lock()
	r.receivers = append(r.receivers, rc)
	r.mu.Unlock()
	return rc
}

// Totals sums every receiver's counters; Lost and Expected are computed
// against the messages accepted so far, so call it once deliveries are
// drained.
func (r *Room) Totals() Totals {
	r.mu.Lock()
	defer r.mu.Unlock()
	var t Totals
	for _, rc := range r.receivers {
		rc.mu.Lock()
		t.Add(rc.t)
		for s, acked := range r.acked {
			t.Expected += acked.count()
			t.Lost += acked.andNotCount(rc.got[s])
		}
		rc.mu.Unlock()
	}
	return t
}

// Receiver is what one connection got. Its methods are called by that
// connection's reader; Room.Totals reads it concurrently, hence the lock.
type Receiver struct {
	room *Room

	mu      sync.Mutex
	started bool
	lastSeq int64
	got     []bitset // per sender
	maxN    []int    // per sender: highest n delivered, -1 before any
	t       Totals
}

// Start sets the seq delivery starts after (the welcome's last_seq of the
// first connection). Later welcomes (resumes) must not call it: the
// connection continues from where it was.
func (rc *Receiver) Start(lastSeq int64) {
	rc.mu.Lock()
	if !rc.started {
		rc.started, rc.lastSeq = true, lastSeq
	}
	rc.mu.Unlock()
}

// LastSeq is the highest seq delivered in order (the since_seq to resume
// with).
func (rc *Receiver) LastSeq() int64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.lastSeq
}

// Seq records a stored message's seq, benchmark message or not.
func (rc *Receiver) Seq(seq int64) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch {
	case !rc.started:
		rc.started, rc.lastSeq = true, seq
	case seq == rc.lastSeq+1:
		rc.lastSeq = seq
	case seq > rc.lastSeq+1:
		rc.t.SeqGaps += seq - rc.lastSeq - 1
		rc.lastSeq = seq
	default:
		rc.t.SeqRepeats++
	}
}

// Message records the delivery of sender's message n (after Seq for its
// seq). Unknown senders are ignored.
func (rc *Receiver) Message(sender, n int) {
	if sender < 0 || sender >= len(rc.got) || n < 0 {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.got[sender].set(n) {
		rc.t.Dups++
		return
	}
	rc.t.Received++
	if n < rc.maxN[sender] {
		rc.t.Reorders++
		return
	}
	rc.maxN[sender] = n
}

// Has reports whether sender's message n was delivered.
func (rc *Receiver) Has(sender, n int) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return sender >= 0 && sender < len(rc.got) && rc.got[sender].has(n)
}
