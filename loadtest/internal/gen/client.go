package gen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"rooms/loadtest/internal/check"
	"rooms/loadtest/internal/report"
)

// MaxSteps bounds the steps of one workload (counters are fixed arrays).
const MaxSteps = 32

// StepCounters count one step's sends and deliveries, by the step each
// message was sent in.
type StepCounters struct {
	// Sent counts sends written to a socket; WriteFailed sends that could
	// not be; Acked and Refused the sends the server acknowledged or
	// answered with an error.
	Sent, WriteFailed, Acked, Refused atomic.Int64
	// Delivered counts benchmark messages received (by every receiver).
	Delivered atomic.Int64
}

// Counters are shared by every client of a workload.
type Counters struct {
	Steps [MaxSteps]StepCounters
	// Reconnects counts connections the client reopened after the server
	// or the network closed them; Drops deliberate drops (resume).
	Reconnects, Drops atomic.Int64
	// NotRecovered counts resumes whose welcome said recovered=false.
	NotRecovered atomic.Int64

	mu        sync.Mutex
	errCodes  map[string]int64
	closes    map[int]int64
	catchUp   *report.Hist
	lastError string
}

// NewCounters returns zeroed counters.
func NewCounters() *Counters {
	return &Counters{errCodes: map[string]int64{}, closes: map[int]int64{}, catchUp: report.NewHist()}
}

func (c *Counters) errCode(code string) {
	c.mu.Lock()
	c.errCodes[code]++
	c.mu.Unlock()
}

func (c *Counters) closed(code int, err error) {
	c.mu.Lock()
	c.closes[code]++
	if err != nil {
		c.lastError = err.Error()
	}
	c.mu.Unlock()
}

func (c *Counters) caughtUp(d time.Duration) {
	c.mu.Lock()
	c.catchUp.Record(d)
	c.mu.Unlock()
}

// ErrorCodes returns the count of each error frame code seen.
func (c *Counters) ErrorCodes() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.errCodes))
	for k, v := range c.errCodes {
		out[k] = v
	}
	return out
}

// Closes returns the count of each close code of unexpected closes (0 for
// a connection that ended without a close frame), and the last error seen.
func (c *Counters) Closes() (map[string]int64, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.closes))
	for k, v := range c.closes {
		out[strconv.Itoa(k)] = v
	}
	return out, c.lastError
}

// CatchUp summarizes the resumes' catch-up times.
func (c *Counters) CatchUp() report.Latency {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.catchUp.Summary()
}

// Client is one rooms.v2 connection of a user to a room, reopened with
// since_seq when it is closed under it.
type Client struct {
	// Index is the client's number in its workload (spreads clients over
	// gateways and source addresses).
	Index  int
	User   *User
	RoomID string
	// Member is the client's sender index in its room, -1 for a client
	// that only receives.
	Member   int
	Room     *check.Room
	Recv     *check.Receiver
	Rec      *report.Recorder
	Counters *Counters
	// Run is the run id benchmark messages of this run carry.
	Run string
	// PayloadSize is the content size of sends.
	PayloadSize int

	base   string
	source net.IP

	wmu  sync.Mutex // serializes writes; guards conn, n and buf
	conn *websocket.Conn
	n    int
	buf  []byte

	mu       sync.Mutex
	stopping bool
	paused   bool
	resume   chan struct{}
	// catch-up of the latest resume: start time and the welcome's last_seq.
	resumeAt     time.Time
	resumeTarget int64
	resuming     bool

	done chan struct{}
}

// NewClient returns a client of the i-th connection (not connected yet).
func (a *API) NewClient(i int, u *User, roomID string, member int, room *check.Room, counters *Counters, run string, payload int) *Client {
	c := &Client{
		Index: i, User: u, RoomID: roomID, Member: member, Room: room,
		Rec: report.NewRecorder(), Counters: counters, Run: run, PayloadSize: payload,
		base: a.base(i), source: a.source(i), done: make(chan struct{}),
	}
	if room != nil {
		c.Recv = room.NewReceiver()
	}
	return c
}

// welcome is the first frame of a connection.
type welcome struct {
	lastSeq   int64
	recovered bool
	at        time.Time
}

// dial opens a connection (resuming after since when since >= 0) and reads
// its welcome.
func (c *Client) dial(ctx context.Context, since int64) (*websocket.Conn, welcome, error) {
	q := url.Values{}
	q.Set("access_token", "Bearer "+c.User.Access)
	if since >= 0 {
		q.Set("since_seq", strconv.FormatInt(since, 10))
	}
	u := strings.Replace(strings.Replace(c.base, "https://", "wss://", 1), "http://", "ws://", 1) +
		"/api/chat/rooms/" + c.RoomID + "?" + q.Encode()
	nd := &net.Dialer{Timeout: 15 * time.Second}
	if c.source != nil {
		nd.LocalAddr = &net.TCPAddr{IP: c.source}
	}
	d := websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: 15 * time.Second,
		Subprotocols:     []string{"rooms.v2"},
		ReadBufferSize:   8 << 10,
		WriteBufferSize:  4 << 10,
	}
	conn, resp, err := d.DialContext(ctx, u, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return nil, welcome{}, fmt.Errorf("dial room %s (status %d): %w", c.RoomID, status, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, data, err := conn.ReadMessage()
	now := time.Now()
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, welcome{}, fmt.Errorf("read welcome of room %s: %w", c.RoomID, err)
	}
	f, err := ParseFrame(data)
	if err != nil || f.Type != "welcome" {
		conn.Close()
		return nil, welcome{}, fmt.Errorf("first frame of room %s is not a welcome: %.100s", c.RoomID, data)
	}
	return conn, welcome{lastSeq: f.LastSeq, recovered: f.Recovered, at: now}, nil
}

// Connect opens the connection and starts its reader, which runs until
// Close or ctx ends; wg tracks it. It returns when the welcome arrived.
func (c *Client) Connect(ctx context.Context, wg *sync.WaitGroup) (time.Time, error) {
	conn, w, err := c.dial(ctx, -1)
	if err != nil {
		close(c.done)
		return time.Time{}, err
	}
	if c.Recv != nil {
		c.Recv.Start(w.lastSeq)
	}
	c.wmu.Lock()
	c.conn = conn
	c.wmu.Unlock()
	wg.Go(func() {
		defer close(c.done)
		c.loop(ctx, conn)
	})
	return w.at, nil
}

// loop reads frames, and reopens the connection with since_seq when it is
// closed while the client is not stopping.
func (c *Client) loop(ctx context.Context, conn *websocket.Conn) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		err := c.read(conn)
		c.mu.Lock()
		stopping, paused, resume := c.stopping, c.paused, c.resume
		c.mu.Unlock()
		if stopping || ctx.Err() != nil {
			return
		}
		if paused {
			select {
			case <-resume:
			case <-ctx.Done():
				return
			}
		} else {
			code := 0
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code = ce.Code
			}
			c.Counters.closed(code, err)
			c.Counters.Reconnects.Add(1)
		}
		conn = c.reopen(ctx)
		if conn == nil {
			return
		}
	}
}

// reopen dials again with since_seq, retrying with capped backoff until it
// succeeds or the client stops.
func (c *Client) reopen(ctx context.Context) *websocket.Conn {
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		since := c.Recv.LastSeq()
		conn, w, err := c.dial(ctx, since)
		if err == nil {
			if !w.recovered {
				c.Counters.NotRecovered.Add(1)
			}
			c.mu.Lock()
			if c.stopping {
				c.mu.Unlock()
				conn.Close()
				return nil
			}
			if since >= w.lastSeq {
				c.resuming = false
				c.Counters.caughtUp(w.at.Sub(start))
			} else {
				c.resuming, c.resumeAt, c.resumeTarget = true, start, w.lastSeq
			}
			c.mu.Unlock()
			c.wmu.Lock()
			c.conn = conn
			c.wmu.Unlock()
			return conn
		}
		c.Counters.closed(-1, err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// read handles frames until the connection fails.
func (c *Client) read(conn *websocket.Conn) error {
	// One buffer for every frame of the connection: ReadMessage would
	// allocate one per frame. ParseFrame copies what it keeps.
	var buf bytes.Buffer
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			return err
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return err
		}
		now := time.Now()
		f, err := ParseFrame(buf.Bytes())
		if err != nil {
			continue
		}
		switch f.Type {
		case "message":
			c.message(f, now)
		case "ack":
			n, step, intended, ok := ParseClientMsgID(f.ClientMsgID)
			if ok && step >= 0 && step < MaxSteps && c.Member >= 0 {
				c.Room.Acked(c.Member, n)
				c.Counters.Steps[step].Acked.Add(1)
				c.Rec.Ack(step, now.Sub(time.Unix(0, intended)))
			}
		case "error":
			c.Counters.errCode(f.Code)
			if _, step, _, ok := ParseClientMsgID(f.ClientMsgID); ok && step >= 0 && step < MaxSteps {
				c.Counters.Steps[step].Refused.Add(1)
			}
		}
	}
}

func (c *Client) message(f Frame, now time.Time) {
	if c.Recv == nil {
		return
	}
	c.Recv.Seq(f.Seq)
	if p, ok := ParseContent(f.Content); ok && p.Run == c.Run {
		c.Recv.Message(p.Sender, p.N)
		if p.Step >= 0 && p.Step < MaxSteps {
			c.Counters.Steps[p.Step].Delivered.Add(1)
			c.Rec.E2E(p.Step, now.Sub(time.Unix(0, p.Intended)))
		}
	}
	c.mu.Lock()
	if c.resuming && f.Seq >= c.resumeTarget {
		c.resuming = false
		c.Counters.caughtUp(now.Sub(c.resumeAt))
	}
	c.mu.Unlock()
}

// Send writes the next benchmark message of this client, due at intended,
// in step. A failed write counts as a send that was not accepted.
func (c *Client) Send(step int, intended time.Time) {
	sc := &c.Counters.Steps[step]
	c.wmu.Lock()
	n := c.n
	c.n++
	p := Payload{Run: c.Run, Step: step, Intended: intended.UnixNano(), Sender: c.Member, N: n}
	c.buf = AppendSendFrame(c.buf[:0], p, c.PayloadSize)
	var err error
	if c.conn == nil {
		err = errors.New("not connected")
	} else {
		err = c.conn.WriteMessage(websocket.TextMessage, c.buf)
	}
	c.wmu.Unlock()
	if err != nil {
		sc.WriteFailed.Add(1)
		return
	}
	sc.Sent.Add(1)
}

// Drop closes the connection on purpose; Resume reopens it with since_seq.
func (c *Client) Drop() {
	c.mu.Lock()
	c.paused = true
	c.resume = make(chan struct{})
	c.mu.Unlock()
	c.Counters.Drops.Add(1)
	c.closeConn()
}

// Resume reopens a dropped connection.
func (c *Client) Resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused {
		// Catching up from now until the reopened connection delivered up
		// to its welcome's last_seq (reopen and message clear it).
		c.paused, c.resuming, c.resumeTarget = false, true, 1<<62
		close(c.resume)
	}
}

// CatchingUp reports whether the latest resume has not delivered up to the
// welcome's last_seq yet.
func (c *Client) CatchingUp() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resuming || c.paused
}

// Close stops the client: its connection is closed and not reopened.
func (c *Client) Close() {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	c.closeConn()
}

func (c *Client) closeConn() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.conn != nil {
		_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		c.conn.Close()
	}
}

// Done is closed when the client's reader has ended.
func (c *Client) Done() <-chan struct{} { return c.done }
