//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// workload is the scripted clients of a test: per room some senders (which
// also receive) and some readers, spread over the gateways.
type workload struct {
	t       *testing.T
	s       *stack
	rooms   []string
	senders []*client
	readers []*client
	all     []*client

	stopc    chan struct{}
	once     sync.Once
	swg, rwg sync.WaitGroup
}

// workloadOpts shapes a workload.
type workloadOpts struct {
	rooms, senders, readers int // senders and readers per room
	users                   int // distinct accounts the clients share (default 4)
}

func newWorkload(t *testing.T, s *stack, o workloadOpts) *workload {
	t.Helper()
	if o.users == 0 {
		o.users = 4
	}
	w := &workload{t: t, s: s, stopc: make(chan struct{})}
	users := make([]*user, o.users)
	for i := range users {
		users[i] = newUser(t, s.url(0))
	}
	n := 0
	for r := 0; r < o.rooms; r++ {
		room := newRoom(t, s.url(0), users[0])
		w.rooms = append(w.rooms, room)
		for i := 0; i < o.senders+o.readers; i++ {
			name := fmt.Sprintf("r%s-s%d", room, i)
			if i >= o.senders {
				name = fmt.Sprintf("r%s-r%d", room, i-o.senders)
			}
			c := newClient(t, s, name, users[n%len(users)], room, n%len(s.gateways))
			n++
			if err := c.connect(time.Now().Add(30 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if i < o.senders {
				w.senders = append(w.senders, c)
			} else {
				w.readers = append(w.readers, c)
			}
			w.all = append(w.all, c)
		}
	}
	t.Cleanup(func() {
		w.stop()
		for _, c := range w.all {
			c.close()
		}
	})
	return w
}

// run starts the senders: each sends perSender messages, one at a time,
// pace apart, retrying unknown outcomes with the same client_msg_id;
// readers stay connected (reconnecting and resuming when dropped). Nothing
// runs past limit.
func (w *workload) run(perSender int, pace, answerWait time.Duration, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for _, c := range w.senders {
		w.swg.Add(1)
		go func() {
			defer w.swg.Done()
			for k := 0; k < perSender && time.Now().Before(deadline); k++ {
				select {
				case <-w.stopc:
					return
				default:
				}
				c.sendUntilAcked(k, 40, answerWait, deadline)
				time.Sleep(pace)
			}
		}()
	}
	for _, c := range w.readers {
		w.rwg.Add(1)
		go func() {
			defer w.rwg.Done()
			for time.Now().Before(deadline) {
				select {
				case <-w.stopc:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if !c.connected() {
					_ = c.connect(deadline)
				}
			}
		}()
	}
}

// stop stops the workload: senders after their current message, readers
// at once. It waits for them.
func (w *workload) stop() {
	w.once.Do(func() { close(w.stopc) })
	w.swg.Wait()
	w.rwg.Wait()
}

// wait waits for the senders to send their counted messages (bounded by
// run's limit), then stops the readers.
func (w *workload) wait() {
	w.swg.Wait()
	w.stop()
}

// recoveryAfter is the time from since to the first delivery, to any
// client, of a message first sent after since: the end-to-end path works
// again. It is 0 when no such message was delivered.
func (w *workload) recoveryAfter(since time.Time) time.Duration {
	first := time.Time{}
	for _, c := range w.senders {
		for _, o := range c.history() {
			if o.Sent.Before(since) {
				continue
			}
			for _, d := range w.all {
				d.mu.Lock()
				at, ok := d.firstSeen[o.UserID+"/"+o.CMID]
				d.mu.Unlock()
				if ok && (first.IsZero() || at.Before(first)) {
					first = at
				}
			}
		}
	}
	if first.IsZero() {
		return 0
	}
	return first.Sub(since)
}

// settledAfter is the time from since until every message sent before
// since and acked had reached every client of its room: the backlog the
// fault left is delivered everywhere. It is 0 when there was none.
func (w *workload) settledAfter(since time.Time) time.Duration {
	var last time.Time
	for _, c := range w.senders {
		for _, o := range c.history() {
			if !o.Acked || !o.Sent.Before(since) {
				continue
			}
			for _, d := range w.all {
				if d.room != o.Room {
					continue
				}
				d.mu.Lock()
				at, ok := d.firstSeen[o.UserID+"/"+o.CMID]
				d.mu.Unlock()
				if ok && at.After(last) {
					last = at
				}
			}
		}
	}
	if last.Before(since) {
		return 0
	}
	return last.Sub(since)
}

// recoveries logs and records both recovery times after the moment at.
func (w *workload) recoveries(t *testing.T, r *result, name string, at time.Time) {
	t.Helper()
	first, settled := w.recoveryAfter(at), w.settledAfter(at)
	r.recovery(name+"_to_first_new_delivery", first)
	r.recovery(name+"_to_backlog_delivered", settled)
	t.Logf("recovery after %s: first delivery of a message sent after it %.2fs later; everything sent before it delivered to every client %.2fs later",
		name, first.Seconds(), settled.Seconds())
}

// storedRow is one row of messages.
type storedRow struct {
	room, seq, user int64
	id, cmid        string
}

func (s *stack) storedRows(t *testing.T) []storedRow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := s.db.Pool.Query(ctx, `SELECT room_id, seq, user_id, id::text, coalesce(client_msg_id, '') FROM messages ORDER BY room_id, seq`)
	if err != nil {
		t.Fatalf("read messages: %v", err)
	}
	defer rows.Close()
	var out []storedRow
	for rows.Next() {
		var r storedRow
		if err := rows.Scan(&r.room, &r.seq, &r.user, &r.id, &r.cmid); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *stack) deadLetters(t *testing.T) map[[2]int64]bool {
	t.Helper()
	rows, err := s.db.Pool.Query(context.Background(), `SELECT kafka_partition, kafka_offset FROM dead_letters WHERE topic = $1`, s.topic)
	if err != nil {
		t.Fatalf("read dead letters: %v", err)
	}
	defer rows.Close()
	out := map[[2]int64]bool{}
	for rows.Next() {
		var p, o int64
		if err := rows.Scan(&p, &o); err != nil {
			t.Fatal(err)
		}
		out[[2]int64{p, o}] = true
	}
	return out
}

// ackedKeys are the messages acked so far, as room/user/client_msg_id.
func (w *workload) ackedKeys() map[string]bool {
	acked := map[string]bool{}
	for _, c := range w.senders {
		for _, o := range c.history() {
			if o.Acked {
				acked[c.room+"/"+o.UserID+"/"+o.CMID] = true
			}
		}
	}
	return acked
}

// verify ends a fault test: it finishes the workload (within limit), runs
// checker 1–5 (check, then checkOffsets once the group has committed the
// whole log) and records the recovery times from at under name.
func (w *workload) verify(t *testing.T, r *result, limit time.Duration, name string, at time.Time) {
	t.Helper()
	w.finish(t, limit)
	w.check(t, r)
	w.s.waitCommitted(t, time.Minute)
	w.s.checkOffsets(t)
	w.recoveries(t, r, name, at)
}

// finish ends the workload and waits for the system to settle: a fence
// message per room (sent after the fault healed, so a lost fan-out tail is
// repaired by the gap it leaves), every acked message stored, every client
// connected and caught up with its room's last seq.
func (w *workload) finish(t *testing.T, limit time.Duration) {
	t.Helper()
	w.wait()
	deadline := time.Now().Add(limit)
	fenced := map[string]bool{}
	for _, c := range w.senders {
		if fenced[c.room] {
			continue
		}
		fenced[c.room] = true
		if o := c.sendUntilAcked(1000000, 40, 20*time.Second, deadline); !o.Acked {
			t.Fatalf("fence of room %s not acked: %v", c.room, o.Attempts)
		}
	}
	acked := w.ackedKeys()
	eventually(t, "every acked message stored", time.Until(deadline), func() bool {
		have := 0
		for _, r := range w.s.storedRows(t) {
			if acked[fmt.Sprintf("%d/%d/%s", r.room, r.user, r.cmid)] {
				have++
			}
		}
		return have == len(acked)
	})
	last := map[string]int64{}
	for _, r := range w.s.storedRows(t) {
		last[strconv.FormatInt(r.room, 10)] = max(last[strconv.FormatInt(r.room, 10)], r.seq)
	}
	for _, c := range w.all {
		if err := c.connect(deadline); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range w.all {
		eventually(t, c.name+" caught up", time.Until(deadline)+time.Second, func() bool {
			if !c.connected() {
				_ = c.connect(deadline)
			}
			return c.last() >= last[c.room]
		})
	}
	// A stray duplicate would arrive within moments.
	time.Sleep(300 * time.Millisecond)
}

// check verifies the guarantees from the clients' histories, PostgreSQL
// and Kafka, and fills the result's numbers.
func (w *workload) check(t *testing.T, r *result) {
	t.Helper()
	rows := w.s.storedRows(t)
	type key struct {
		room, user int64
		cmid       string
	}
	count := map[key]int{}
	seqOf := map[key]int64{}
	perRoom := map[int64][]int64{}
	for _, row := range rows {
		k := key{row.room, row.user, row.cmid}
		count[k]++
		seqOf[k] = row.seq
		perRoom[row.room] = append(perRoom[row.room], row.seq)
	}
	// Per room, seq is exactly 1..N.
	for _, room := range w.rooms {
		id, _ := strconv.ParseInt(room, 10, 64)
		seqs := perRoom[id]
		for i, s := range seqs {
			if s != int64(i+1) {
				t.Fatalf("room %s: stored seq at position %d is %d (want 1..%d)", room, i, s, len(seqs))
			}
		}
	}
	// Every acked message stored exactly once; unknown outcomes at most
	// once; nothing stored that no client sent.
	known := map[key]bool{}
	var sent, acked, unknown, gaveUp, reconnects int
	for _, c := range w.all {
		c.mu.Lock()
		reconnects += c.reconnects
		c.mu.Unlock()
	}
	for _, c := range w.senders {
		var prev int64
		var prevCMID string
		for _, o := range c.history() {
			room, _ := strconv.ParseInt(o.Room, 10, 64)
			uid, _ := strconv.ParseInt(o.UserID, 10, 64)
			k := key{room, uid, o.CMID}
			known[k] = true
			sent++
			n := count[k]
			for _, a := range o.Attempts {
				if a != outAck {
					unknown++
					break
				}
			}
			if len(o.Attempts) > 0 && strings.HasPrefix(o.Attempts[len(o.Attempts)-1], outRefused) {
				t.Fatalf("%s: %s refused: %v", c.name, o.CMID, o.Attempts)
			}
			switch {
			case o.Acked:
				acked++
				if n != 1 {
					t.Fatalf("%s: acked %s stored %d times (attempts %v)", c.name, o.CMID, n, o.Attempts)
				}
				// Per-sender order: a sender moves on only after an ack,
				// so its acked messages are stored in the order sent.
				if o.Burst {
					break
				}
				if seqOf[k] <= prev {
					t.Fatalf("%s: %s has seq %d, not after %s's %d", c.name, o.CMID, seqOf[k], prevCMID, prev)
				}
				prev, prevCMID = seqOf[k], o.CMID
			default:
				gaveUp++
				if n > 1 {
					t.Fatalf("%s: unacked %s stored %d times (attempts %v)", c.name, o.CMID, n, o.Attempts)
				}
			}
		}
	}
	for k := range count {
		if !known[k] {
			t.Fatalf("stored message %+v was sent by no client", k)
		}
	}
	// Every client that stayed or resumed has the complete sequence.
	for _, c := range w.all {
		id, _ := strconv.ParseInt(c.room, 10, 64)
		n := int64(len(perRoom[id]))
		got := c.delivered()
		if int64(len(got)) != n {
			t.Fatalf("%s: received %d messages, room has %d (%s)", c.name, len(got), n, summarize(got))
		}
		for i, s := range got {
			if s != int64(i+1) {
				t.Fatalf("%s: position %d has seq %d (%s)", c.name, i, s, summarize(got))
			}
		}
	}
	committed := w.s.checkOffsets(t)
	dl := len(w.s.deadLetters(t))
	resultsMu.Lock()
	r.Sent, r.Acked, r.Unknown, r.GaveUp, r.Stored = sent, acked, unknown, gaveUp, len(rows)
	r.Clients, r.Reconnects, r.DeadLetters = len(w.all), reconnects, dl
	resultsMu.Unlock()
	t.Logf("sent %d, acked %d, unknown outcome %d, gave up %d, stored %d, dead letters %d, clients %d, reconnects %d, committed offsets %d",
		sent, acked, unknown, gaveUp, len(rows), dl, len(w.all), reconnects, committed)
}

func summarize(s []int64) string {
	if len(s) <= 20 {
		return fmt.Sprint(s)
	}
	return fmt.Sprint(s[:10], "…", s[len(s)-10:])
}

// checkOffsets checks that the group's committed offsets are never ahead of
// PostgreSQL: every record below a partition's committed offset is stored
// (by id, or as a duplicate by client_msg_id) or dead-lettered. It returns
// the number of records below the committed offsets.
func (s *stack) checkOffsets(t *testing.T) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kc, err := kgo.NewClient(kgo.SeedBrokers(s.brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	adm := kadm.NewClient(kc)
	offs, err := adm.FetchOffsets(ctx, s.group)
	if err != nil {
		t.Fatalf("fetch committed offsets: %v", err)
	}
	committed := map[int32]int64{}
	var total int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == s.topic && o.At > 0 {
			committed[o.Partition] = o.At
			total += o.At
		}
	})
	if total == 0 {
		t.Logf("no committed offsets for %s in group %s: %+v", s.topic, s.group, offs)
		return 0
	}
	ids := map[string]bool{}
	dups := map[string]bool{}
	for _, r := range s.storedRows(t) {
		ids[r.id] = true
		if r.cmid != "" {
			dups[fmt.Sprintf("%d/%d/%s", r.room, r.user, r.cmid)] = true
		}
	}
	dead := s.deadLetters(t)
	parts := map[string]map[int32]kgo.Offset{s.topic: {}}
	for p := range committed {
		parts[s.topic][p] = kgo.NewOffset().AtStart()
	}
	cc, err := kgo.NewClient(kgo.SeedBrokers(s.brokers), kgo.ConsumePartitions(parts))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	next := map[int32]int64{}
	done := func() bool {
		for p, c := range committed {
			if next[p] < c {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cc.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read the topic up to the committed offsets %v: got to %v: %v", committed, next, ctx.Err())
		}
		fs.EachRecord(func(rec *kgo.Record) {
			if rec.Offset >= committed[rec.Partition] {
				return
			}
			next[rec.Partition] = rec.Offset + 1
			var m struct {
				ID          string `json:"id"`
				RoomID      string `json:"room_id"`
				UserID      string `json:"user_id"`
				ClientMsgID string `json:"client_msg_id"`
			}
			_ = json.Unmarshal(rec.Value, &m)
			switch {
			case ids[m.ID]:
			case m.ClientMsgID != "" && dups[m.RoomID+"/"+m.UserID+"/"+m.ClientMsgID]:
			case dead[[2]int64{int64(rec.Partition), rec.Offset}]:
			default:
				t.Errorf("partition %d offset %d (committed %d) is neither stored nor dead-lettered: %s",
					rec.Partition, rec.Offset, committed[rec.Partition], rec.Value)
			}
		})
	}
	if t.Failed() {
		t.FailNow()
	}
	return total
}

// waitCommitted waits until the group has committed every record of the
// topic (the workers are done with the log).
func (s *stack) waitCommitted(t *testing.T, timeout time.Duration) {
	t.Helper()
	kc, err := kgo.NewClient(kgo.SeedBrokers(s.brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	adm := kadm.NewClient(kc)
	eventually(t, "offsets committed up to the end of the log", timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ends, err := adm.ListEndOffsets(ctx, s.topic)
		if err != nil || ends.Error() != nil || len(ends[s.topic]) == 0 {
			return false
		}
		offs, err := adm.FetchOffsets(ctx, s.group)
		if err != nil {
			return false
		}
		ok := true
		ends.Each(func(e kadm.ListedOffset) {
			o, found := offs.Lookup(e.Topic, e.Partition)
			if e.Offset > 0 && (!found || o.At < e.Offset) {
				ok = false
			}
		})
		return ok
	})
}
