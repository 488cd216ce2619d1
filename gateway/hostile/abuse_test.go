package hostile_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFloodIsThrottledPerUser: user A floods one room from three
// connections far above SEND_RATE while user B sends at a normal rate on
// the same gateway. A is refused with rate_limited (and may be closed with
// 4029); B is never refused, gets every ack, and receives every stored
// message of the room once, in order.
func TestFloodIsThrottledPerUser(t *testing.T) {
	s := start(t, opts{worker: true, env: []string{"SEND_RATE=20", "SEND_BURST=40"}})
	a := s.user("flooder")
	b := s.user("bystander")
	room := s.room(b.AccessToken, "general")

	bc := s.mustWS(room, b.AccessToken, true)
	if f := bc.next(); f.Type != "welcome" {
		t.Fatalf("first frame %+v", f)
	}

	const perConn = 300
	var (
		mu          sync.Mutex
		aAcks       int
		aRefused    int
		aCloseCodes []int
	)
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		c := s.mustWS(room, a.AccessToken, true)
		c.next() // welcome
		wg.Add(2)
		done := make(chan struct{})
		go func() { // writer: as fast as the socket takes it
			defer wg.Done()
			for j := 0; j < perConn; j++ {
				select {
				case <-done:
					return
				default:
				}
				b, _ := json.Marshal(map[string]string{"type": "send", "content": "flood", "client_msg_id": fmt.Sprintf("a%d-%d", i, j)})
				if c.c.WriteMessage(1, b) != nil {
					return
				}
			}
		}()
		go func() { // reader: count answers until the flood is over
			defer wg.Done()
			defer close(done)
			answered := 0
			for answered < perConn {
				_ = c.c.SetReadDeadline(time.Now().Add(60 * time.Second))
				_, data, err := c.c.ReadMessage()
				if err != nil {
					mu.Lock()
					aCloseCodes = append(aCloseCodes, closeCodeOf(err))
					mu.Unlock()
					return
				}
				var f frame
				_ = json.Unmarshal(data, &f)
				mu.Lock()
				switch {
				case f.Type == "ack":
					aAcks++
					answered++
				case f.Type == "error" && f.Code == "rate_limited":
					aRefused++
					answered++
				case f.Type == "error":
					t.Errorf("flooder got %s", data)
					answered++
				}
				mu.Unlock()
			}
		}()
	}

	// B: one message every 100 ms (10/s, half of SEND_RATE), meanwhile.
	const bCount = 30
	bSent := map[string]time.Time{}
	var bLatencies []time.Duration
	bAcks := 0
	bSeqs := []int64{}
	bErrors := []frame{}
	next := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	frames := make(chan frame, 10000)
	readErr := make(chan error, 1)
	go func() {
		for {
			_ = bc.c.SetReadDeadline(time.Now().Add(90 * time.Second))
			_, data, err := bc.c.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			var f frame
			_ = json.Unmarshal(data, &f)
			frames <- f
		}
	}()
	handle := func(f frame) {
		switch f.Type {
		case "ack":
			bAcks++
			bLatencies = append(bLatencies, time.Since(bSent[f.ClientMsgID]))
		case "message":
			bSeqs = append(bSeqs, f.Seq)
		case "error":
			bErrors = append(bErrors, f)
		}
	}
	for next < bCount {
		select {
		case <-tick.C:
			id := "b" + strconv.Itoa(next)
			bSent[id] = time.Now()
			bc.send("normal "+strconv.Itoa(next), id)
			next++
		case f := <-frames:
			handle(f)
		case err := <-readErr:
			t.Fatalf("bystander's connection ended: %v", err)
		}
	}
	wg.Wait()
	mu.Lock()
	t.Logf("flooder: %d acked, %d refused with rate_limited, connections closed with %v", aAcks, aRefused, aCloseCodes)
	if aRefused == 0 {
		t.Error("the flooder was never refused")
	}
	for _, code := range aCloseCodes {
		// -1 and 1006 are a connection that ended without a readable close
		// frame: the server closes the TCP connection 2 s after its 4029
		// close frame, and a flooder still writing then gets a reset that
		// can discard the frame before the client reads it (seen on a
		// loaded machine).
		if code != 4029 && code != -1 && code != 1006 {
			t.Errorf("a flooder connection ended with %d, want 4029 or still open", code)
		}
	}
	mu.Unlock()

	// Wait until every acked message is stored and B has received all of
	// the room's messages.
	mu.Lock()
	acked := int64(aAcks + bCount)
	mu.Unlock()
	deadline := time.After(90 * time.Second)
	lastSeq := func() int64 {
		var got struct {
			LastSeq int64 `json:"last_seq"`
		}
		r := s.do("GET", "/api/chat/rooms/"+room, b.AccessToken, nil)
		if r.Status != 200 || jsonInto(r.Body, &got) != nil {
			t.Fatalf("room: %d %s", r.Status, r.Body)
		}
		return got.LastSeq
	}
	// n is the room's last seq when B had all of it. A flooder's send that
	// was accepted just before its connection closed may still be stored
	// after that; B receives it too, but the checks below use n.
	var n int64
	for {
		if bAcks == bCount && int64(len(bSeqs)) >= acked {
			if cur := lastSeq(); int64(len(bSeqs)) == cur {
				n = cur
				break
			}
		}
		select {
		case f := <-frames:
			handle(f)
		case err := <-readErr:
			t.Fatalf("bystander's connection ended: %v", err)
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("bystander has %d of %d acks and %d messages of %d", bAcks, bCount, len(bSeqs), lastSeq())
		}
	}
	if len(bErrors) > 0 {
		t.Fatalf("the bystander got errors: %+v", bErrors)
	}
	for i, seq := range bSeqs {
		if seq != int64(i+1) {
			t.Fatalf("bystander's seqs are not 1..%d in order: %v", n, bSeqs)
		}
	}
	if int64(len(bSeqs)) != n {
		t.Fatalf("bystander received %d messages, the room has %d", len(bSeqs), n)
	}
	// A flooder's send accepted just before its 4029 may be stored without
	// its ack reaching the closed socket: more stored than acked is fine,
	// fewer would be a lost message.
	if n < acked {
		t.Errorf("room has %d messages, but %d were acked", n, acked)
	}
	slices.Sort(bLatencies)
	t.Logf("bystander ack latency (not asserted): median %v, max %v", bLatencies[len(bLatencies)/2], bLatencies[len(bLatencies)-1])
}

func closeCodeOf(err error) int {
	var code int
	if _, e := fmt.Sscanf(strings.TrimPrefix(err.Error(), "websocket: close "), "%d", &code); e == nil {
		return code
	}
	return -1
}

// TestLoginBruteForce: a burst of wrong-password logins for one nickname
// is answered 429 with Retry-After after AUTH_RATE_LIMIT attempts, before
// any password is hashed, so the burst costs at most that many hashes; the
// right password is refused too while the limit holds, and the server
// keeps answering other requests.
func TestLoginBruteForce(t *testing.T) {
	s := start(t, opts{env: []string{"AUTH_RATE_LIMIT=5", "AUTH_RATE_LIMIT_IP=1000", "HASH_CONCURRENCY=1"}})
	s.register("target")
	const attempts = 60
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < attempts; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := s.do("POST", "/api/user/login", "", map[string]string{"nickname": "target", "password": "guess-" + strconv.Itoa(i)},
				"X-Real-IP", fmt.Sprintf("10.1.%d.%d", i/200, i%200))
			mu.Lock()
			defer mu.Unlock()
			codes[r.Status]++
			if r.Status == http.StatusTooManyRequests {
				if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs < 1 {
					t.Errorf("429 with Retry-After %q", r.Header.Get("Retry-After"))
				}
				wantError(t, r.Status, r.Header, r.Body, http.StatusTooManyRequests, "rate_limited")
			}
		}()
	}
	// Other requests are answered during the burst.
	if r := s.do("GET", "/healthz", "", nil); r.Status != 200 {
		t.Errorf("healthz during the burst: %d", r.Status)
	}
	wg.Wait()
	t.Logf("answers: %v", codes)
	if codes[http.StatusUnauthorized] > 5 || codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests] != attempts {
		t.Fatalf("answers %v: want at most 5 × 401 (hashed) and the rest 429", codes)
	}
	r := s.do("POST", "/api/user/login", "", map[string]string{"nickname": "target", "password": "password-target"})
	wantError(t, r.Status, r.Header, r.Body, http.StatusTooManyRequests, "rate_limited")
}

// TestConnectionCaps: WS_MAX_CONNS_PER_USER and WS_MAX_CONNS refuse
// handshakes over them (429 rate_limited and 503 unavailable, both with
// Retry-After) before the upgrade, and closing a socket frees its slot.
func TestConnectionCaps(t *testing.T) {
	s := start(t, opts{env: []string{"WS_MAX_CONNS_PER_USER=2", "WS_MAX_CONNS=3"}})
	hoarder := s.user("hoarder")
	other := s.user("other")
	third := s.user("third")
	room := s.room(hoarder.AccessToken, "general")

	h1 := s.mustWS(room, hoarder.AccessToken, true)
	h1.next()
	s.mustWS(room, hoarder.AccessToken, false).read()
	_, r, err := s.dialWS(room, hoarder.AccessToken, true, nil, nil)
	if err == nil {
		t.Fatal("third connection of one user accepted")
	}
	wantError(t, r.Status, r.Header, r.Body, http.StatusTooManyRequests, "rate_limited")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	s.mustWS(room, other.AccessToken, true).next()
	_, r, err = s.dialWS(room, third.AccessToken, true, nil, nil)
	if err == nil {
		t.Fatal("connection over WS_MAX_CONNS accepted")
	}
	wantError(t, r.Status, r.Header, r.Body, http.StatusServiceUnavailable, "unavailable")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	// REST is not affected by the WebSocket caps.
	if r := s.do("GET", "/api/user/me", third.AccessToken, nil); r.Status != 200 {
		t.Fatalf("me: %d", r.Status)
	}
	h1.c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, _, err := s.dialWS(room, third.AccessToken, true, nil, nil)
		if err == nil {
			c.next()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSlowlorisHandshakes: clients that send their request headers a byte
// at a time, or nothing at all, are disconnected once HTTP_READ_TIMEOUT
// has passed, long before they finish, and honest clients are served
// meanwhile.
func TestSlowlorisHandshakes(t *testing.T) {
	s := start(t, opts{env: []string{"HTTP_READ_TIMEOUT=2s"}})
	sess := s.user("slowpoke")
	room := s.room(sess.AccessToken, "general")
	addr := strings.TrimPrefix(s.base, "http://")
	request := "GET /api/chat/rooms/" + room + " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Authorization: Bearer " + sess.AccessToken + "\r\n" + strings.Repeat("X-Pad: slow\r\n", 200) + "\r\n"

	type result struct {
		name    string
		written int
		err     error
	}
	results := make(chan result, 6)
	for i := 0; i < 5; i++ {
		go func() {
			name := "dribbler " + strconv.Itoa(i)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				results <- result{name, 0, err}
				return
			}
			defer conn.Close()
			closed := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, conn); close(closed) }()
			for n := 0; n < len(request); n++ {
				select {
				case <-closed:
					results <- result{name, n, nil}
					return
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := conn.Write([]byte{request[n]}); err != nil {
					results <- result{name, n, nil}
					return
				}
			}
			results <- result{name, len(request), fmt.Errorf("sent the whole %d-byte request without being cut", len(request))}
		}()
	}
	go func() {
		name := "silent"
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			results <- result{name, 0, err}
			return
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		_, err = io.Copy(io.Discard, conn)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			results <- result{name, 0, fmt.Errorf("still connected after 60 s")}
			return
		}
		results <- result{name, 0, nil}
	}()

	// Meanwhile an honest client connects and talks.
	c := s.mustWS(room, sess.AccessToken, true)
	c.next()
	c.write([]byte(`{"type":"ping"}`))
	for f := c.next(); f.Type != "pong"; f = c.next() {
	}

	var written []int
	for i := 0; i < 6; i++ {
		r := <-results
		if r.err != nil {
			t.Errorf("%s: %v", r.name, r.err)
		}
		written = append(written, r.written)
	}
	sort.Ints(written)
	t.Logf("bytes the slow clients got to send before being cut (of %d): %v", len(request), written)

	// A complete request on a fresh connection is still served.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz after the slow clients: %v %v", resp, err)
	}
	resp.Body.Close()
}
