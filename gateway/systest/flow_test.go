package systest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

const wait = 60 * time.Second

// TestEveryClientGetsTheSameGaplessSequence spreads the clients of several
// rooms over both gateways, sends from all of them at once, and checks that
// every client sees 1..N exactly once and in order, every send was acked,
// per-sender order is kept, and PostgreSQL holds exactly the acked messages.
func TestEveryClientGetsTheSameGaplessSequence(t *testing.T) {
	s := newStack(t, stackOpts{})
	const rooms, clientsPerRoom, perSender = 3, 4, 25
	owner := newUser(t, s.url(0))
	type member struct {
		u   *user
		c   *wsClient
		col *collector
	}
	roomIDs := make([]string, rooms)
	members := make([][]*member, rooms)
	for r := range roomIDs {
		roomIDs[r] = newRoom(t, s.url(0), owner)
		for i := 0; i < clientsPerRoom; i++ {
			u := newUser(t, s.url(i%2))
			c := dial(t, s.url(i%2), roomIDs[r], u, "rooms.v2", nil)
			m := &member{u: u, c: c, col: newCollector()}
			w := c.next(wait)
			if w.Type != "welcome" || w.LastSeq != 0 || !w.Recovered {
				t.Fatalf("first frame %s", w.Raw)
			}
			members[r] = append(members[r], m)
		}
	}
	var wg sync.WaitGroup
	for r := range members {
		for _, m := range members[r] {
			wg.Add(1)
			go func(m *member) {
				defer wg.Done()
				for k := 0; k < perSender; k++ {
					m.c.send(fmt.Sprintf("%s says %d", m.u.Nickname, k), fmt.Sprintf("c-%d", k))
				}
			}(m)
		}
	}
	wg.Wait()
	total := int64(clientsPerRoom * perSender)
	for r := range members {
		for _, m := range members[r] {
			m.c.drainUntil(m.col, wait, func() bool {
				return int64(len(m.col.seqs)) >= total && len(m.col.acks) >= perSender
			})
		}
	}
	for r, roomID := range roomIDs {
		var ref []int64
		for i, m := range members[r] {
			who := fmt.Sprintf("room %s client %d", roomID, i)
			checkGapless(t, who, m.col.seqs, 1, total)
			if len(m.col.errs) > 0 {
				t.Fatalf("%s got errors %v", who, m.col.errs)
			}
			for k := 0; k < perSender; k++ {
				if m.col.acks[fmt.Sprintf("c-%d", k)] != 1 {
					t.Fatalf("%s: c-%d acked %d times", who, k, m.col.acks[fmt.Sprintf("c-%d", k)])
				}
			}
			if ref == nil {
				ref = m.col.seqs
			}
			// Per-sender order: each sender's c-0..c-n have increasing seqs.
			for _, sender := range members[r] {
				prev := int64(0)
				for k := 0; k < perSender; k++ {
					seq := m.col.byCmid[sender.u.ID+"/"+fmt.Sprintf("c-%d", k)]
					if seq <= prev {
						t.Fatalf("%s: sender %s message c-%d has seq %d after %d", who, sender.u.ID, k, seq, prev)
					}
					prev = seq
				}
			}
		}
		seqs, _ := s.stored(t, roomID)
		checkGapless(t, "stored room "+roomID, seqs, 1, total)
	}
}

// TestDuplicateClientMsgIDIsStoredOnceAndAckedAgain sends the same
// client_msg_id twice and expects two acks, one stored message, one delivery.
func TestDuplicateClientMsgIDIsStoredOnceAndAckedAgain(t *testing.T) {
	s := newStack(t, stackOpts{})
	u := newUser(t, s.url(0))
	room := newRoom(t, s.url(0), u)
	c := dial(t, s.url(0), room, u, "rooms.v2", nil)
	col := newCollector()
	c.drainUntil(col, wait, func() bool { return col.welcome.Type == "welcome" })
	c.send("once", "dup-1")
	c.drainUntil(col, wait, func() bool { return col.acks["dup-1"] == 1 && len(col.seqs) == 1 })
	c.send("once", "dup-1")
	c.send("marker", "after")
	c.drainUntil(col, wait, func() bool { return col.acks["dup-1"] == 2 && len(col.seqs) == 2 })
	checkGapless(t, "client", col.seqs, 1, 2)
	seqs, cmids := s.stored(t, room)
	checkGapless(t, "stored", seqs, 1, 2)
	if cmids[0] != "dup-1" || cmids[1] != "after" {
		t.Fatalf("stored client_msg_ids %v", cmids)
	}
}

// TestResumeDeliversExactlyTheMissedMessages disconnects a client, sends
// while it is away, and resumes it with since_seq on the other gateway.
func TestResumeDeliversExactlyTheMissedMessages(t *testing.T) {
	s := newStack(t, stackOpts{})
	sender := newUser(t, s.url(0))
	reader := newUser(t, s.url(1))
	room := newRoom(t, s.url(0), sender)
	sc := dial(t, s.url(0), room, sender, "rooms.v2", nil)
	scol := newCollector()
	rc := dial(t, s.url(1), room, reader, "rooms.v2", nil)
	rcol := newCollector()
	for i := 1; i <= 10; i++ {
		sc.send("before "+strconv.Itoa(i), "b"+strconv.Itoa(i))
	}
	rc.drainUntil(rcol, wait, func() bool { return len(rcol.seqs) == 10 })
	rc.conn.Close()
	for i := 1; i <= 15; i++ {
		sc.send("while away "+strconv.Itoa(i), "w"+strconv.Itoa(i))
	}
	sc.drainUntil(scol, wait, func() bool { return len(scol.seqs) == 25 })
	q := url.Values{"since_seq": {"10"}}
	rc2 := dial(t, s.url(0), room, reader, "rooms.v2", q)
	rcol2 := newCollector()
	rc2.drainUntil(rcol2, wait, func() bool { return rcol2.welcome.Type == "welcome" })
	if !rcol2.welcome.Recovered || rcol2.welcome.LastSeq != 25 {
		t.Fatalf("welcome %s", rcol2.welcome.Raw)
	}
	for i := 1; i <= 5; i++ {
		sc.send("live "+strconv.Itoa(i), "l"+strconv.Itoa(i))
	}
	rc2.drainUntil(rcol2, wait, func() bool { return len(rcol2.seqs) >= 20 })
	// Give any stray duplicate a moment to show up before checking.
	time.Sleep(300 * time.Millisecond)
	for len(rc2.frames) > 0 {
		rcol2.add(<-rc2.frames)
	}
	checkGapless(t, "resumed client", rcol2.seqs, 11, 30)
}

// TestLegacyProtocolFraming checks the legacy framing byte for byte: the
// first frame is the latest messages newest first, then one message object
// per frame as stored, and raw text frames are the content.
func TestLegacyProtocolFraming(t *testing.T) {
	s := newStack(t, stackOpts{})
	u := newUser(t, s.url(0))
	room := newRoom(t, s.url(0), u)
	v2 := dial(t, s.url(0), room, u, "rooms.v2", nil)
	col := newCollector()
	for i := 1; i <= 3; i++ {
		v2.send("history "+strconv.Itoa(i), "h"+strconv.Itoa(i))
	}
	v2.drainUntil(col, wait, func() bool { return len(col.seqs) == 3 })

	other := newUser(t, s.url(1))
	legacy := dial(t, s.url(1), room, other, "", nil)
	first := legacy.next(wait)
	var history []json.RawMessage
	if err := json.Unmarshal(first.Raw, &history); err != nil {
		t.Fatalf("first legacy frame is not a JSON array: %s", first.Raw)
	}
	var rest []json.RawMessage
	if code := doJSON(t, "GET", s.url(0)+"/api/chat/rooms/"+room+"/messages", u.Access, nil, &rest); code != 200 {
		t.Fatalf("history: %d", code)
	}
	if len(history) != 3 || len(rest) != 3 {
		t.Fatalf("legacy history has %d messages, REST %d", len(history), len(rest))
	}
	for i := range history {
		if string(history[i]) != string(rest[2-i]) {
			t.Fatalf("legacy history[%d] = %s, want REST[%d] = %s (newest first)", i, history[i], 2-i, rest[2-i])
		}
	}
	legacy.writeText("from legacy")
	var got frame
	for {
		got = legacy.next(wait)
		if got.Content == "from legacy" {
			break
		}
	}
	var fromREST []json.RawMessage
	doJSON(t, "GET", s.url(0)+"/api/chat/rooms/"+room+"/messages?after_seq=3", u.Access, nil, &fromREST)
	if len(fromREST) != 1 || string(fromREST[0]) != string(got.Raw) {
		t.Fatalf("legacy frame %s differs from stored %s", got.Raw, fromREST)
	}
	if got.Type != "" || got.Seq != 4 || got.UserID != other.ID {
		t.Fatalf("legacy frame %s", got.Raw)
	}
	legacy.writeText("\x00")
	for {
		f := legacy.next(wait)
		if f.Type == "error" {
			if f.Code == "" {
				t.Fatalf("error frame without code: %s", f.Raw)
			}
			break
		}
	}
}

// TestWorkerKilledMidStreamLosesNothing SIGKILLs a worker while messages
// flow, restarts it, and checks every acked message is stored exactly once.
func TestWorkerKilledMidStreamLosesNothing(t *testing.T) {
	s := newStack(t, stackOpts{})
	owner := newUser(t, s.url(0))
	rooms := []string{newRoom(t, s.url(0), owner), newRoom(t, s.url(0), owner), newRoom(t, s.url(0), owner)}
	type party struct {
		c   *wsClient
		col *collector
	}
	var parties []party
	for i, room := range rooms {
		u := newUser(t, s.url(i%2))
		c := dial(t, s.url(i%2), room, u, "rooms.v2", nil)
		parties = append(parties, party{c, newCollector()})
	}
	const n = 120
	var wg sync.WaitGroup
	for _, p := range parties {
		wg.Add(1)
		go func(p party) {
			defer wg.Done()
			for k := 0; k < n; k++ {
				p.c.send("m"+strconv.Itoa(k), "k"+strconv.Itoa(k))
				if k%20 == 0 {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}(p)
	}
	time.Sleep(150 * time.Millisecond)
	_ = s.workers[0].Stop(t, syscall.SIGKILL)
	wg.Wait()
	s.workers[0].Start(t)
	for i, p := range parties {
		p.c.drainUntil(p.col, 2*wait, func() bool { return len(p.col.seqs) >= n && len(p.col.acks) >= n })
		checkGapless(t, "client of room "+rooms[i], p.col.seqs, 1, n)
		seqs, cmids := s.stored(t, rooms[i])
		checkGapless(t, "stored room "+rooms[i], seqs, 1, n)
		seen := map[string]bool{}
		for _, c := range cmids {
			if seen[c] {
				t.Fatalf("client_msg_id %s stored twice", c)
			}
			seen[c] = true
		}
	}
}

// TestGatewaySIGTERMClosesSocketsWith1001 checks the drain: every socket of
// the stopped gateway is closed with 1001, its sends were flushed, and the
// client resumes on the other gateway without a gap.
func TestGatewaySIGTERMClosesSocketsWith1001(t *testing.T) {
	s := newStack(t, stackOpts{})
	u := newUser(t, s.url(0))
	room := newRoom(t, s.url(0), u)
	c := dial(t, s.url(0), room, u, "rooms.v2", nil)
	col := newCollector()
	for i := 0; i < 30; i++ {
		c.send("before drain "+strconv.Itoa(i), "d"+strconv.Itoa(i))
	}
	if err := s.gateways[0].Stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("gateway exit after SIGTERM: %v", err)
	}
	select {
	case <-c.closed:
	case <-time.After(wait):
		t.Fatal("socket not closed")
	}
	for len(c.frames) > 0 {
		col.add(<-c.frames)
	}
	c.mu.Lock()
	code := c.closeCode
	c.mu.Unlock()
	if code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
	// Whatever was acked must be stored; resume on the other gateway.
	c2 := dial(t, s.url(1), room, u, "rooms.v2", url.Values{"since_seq": {strconv.FormatInt(lastOf(col.seqs), 10)}})
	col2 := newCollector()
	c2.drainUntil(col2, wait, func() bool { return col2.welcome.Type == "welcome" })
	if !col2.welcome.Recovered {
		t.Fatalf("welcome %s", col2.welcome.Raw)
	}
	all := append(append([]int64{}, col.seqs...), col2.seqs...)
	c2.drainUntil(col2, wait, func() bool {
		all = append(append([]int64{}, col.seqs...), col2.seqs...)
		return int64(len(all)) >= col2.welcome.LastSeq
	})
	checkGapless(t, "client across the drain", all, 1, col2.welcome.LastSeq)
	seqs, cmids := s.stored(t, room)
	stored := map[string]bool{}
	for _, c := range cmids {
		stored[c] = true
	}
	for cmid := range col.acks {
		if !stored[cmid] {
			t.Fatalf("acked %s not stored (stored %d)", cmid, len(seqs))
		}
	}
}
