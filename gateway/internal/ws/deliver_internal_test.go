package ws

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"rooms/gateway/internal/metrics"
	"rooms/shared/testenv"
)

// pair is a server connection (the conn under test, on a real loopback
// socket with small buffers) and the client at the other end, which reads
// only when the test says so; read is the last seq the client has read.
type pair struct {
	c      *conn
	client *websocket.Conn
	read   int64
}

func newPair(t *testing.T) *pair {
	t.Helper()
	conns := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wc, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		conns <- wc
	}))
	hs.Listener = Listener(hs.Listener)
	hs.Start()
	t.Cleanup(hs.Close)
	small := func(opt int) func(string, string, syscall.RawConn) error {
		return func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 64<<10)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	d := websocket.Dialer{NetDial: (&net.Dialer{Control: small(syscall.SO_RCVBUF)}).Dial}
	client, _, err := d.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	wc := <-conns
	t.Cleanup(func() { wc.Close() })

	srv := &Server{cfg: Config{SendQueue: 1 << 20, WriteTimeout: time.Minute}.withDefaults(),
		logger: slog.New(slog.DiscardHandler), m: metrics.Discard().WS, inline: true}
	c := &conn{srv: srv, ws: wc, readerDone: make(chan struct{}), writerDone: make(chan struct{}), done: make(chan struct{})}
	sk, ok := c.netConn().(*sock)
	if !ok {
		t.Fatalf("the server's socket is a %T, not a sock", c.netConn())
	}
	c.sock = sk
	if err := small(syscall.SO_SNDBUF)("", "", sk.raw); err != nil {
		t.Fatal(err)
	}
	return &pair{c: c, client: client}
}

// payload is message seq's content: big, so that a write of a few of
// them is more than the socket takes, and different for every seq.
func payload(seq int64) []byte {
	return []byte(strconv.FormatInt(seq, 10) + ":" + strings.Repeat("m", 20000))
}

// startReader runs the connection's read loop, as run does.
func (p *pair) startReader() {
	go func() {
		p.c.readLoop()
		close(p.c.readerDone)
	}()
}

// readMessage reads the next frame at the client and checks that it is
// message seq read+1, whole.
func (p *pair) readMessage(t *testing.T) {
	t.Helper()
	_ = p.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, data, err := p.client.ReadMessage()
	if err != nil {
		t.Fatalf("client read after seq %d: %v", p.read, err)
	}
	p.read++
	if typ != websocket.TextMessage || !bytes.Equal(data, payload(p.read)) {
		t.Fatalf("client got a %d-byte frame of type %d, want message %d whole", len(data), typ, p.read)
	}
}

// readThenClose reads messages up to seq last, each whole and in order,
// then a close frame with code.
func (p *pair) readThenClose(t *testing.T, last int64, code int) {
	t.Helper()
	for p.read < last {
		p.readMessage(t)
	}
	_ = p.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := p.client.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code {
		t.Fatalf("after message %d: %v, want close %d", last, err, code)
	}
}

// fillUntilTail writes message frames without waiting, as the fan-out
// reader does, holding the connection's writes, until the socket takes
// only part of a write. It returns the last seq written and leaves writing
// held, with the tail queued.
func (p *pair) fillUntilTail(t *testing.T) int64 {
	t.Helper()
	c := p.c
	c.mu.Lock()
	c.writing = true
	c.mu.Unlock()
	var seq int64
	for range 5000 {
		c.writeNow([]frame{{seq: seq + 1, data: payload(seq + 1)}, {seq: seq + 2, data: payload(seq + 2)}})
		c.mu.Lock()
		queued := len(c.frames)
		tail := queued > 0 && c.frames[0].tail
		if queued > 0 && !tail {
			// The socket took nothing and both frames were queued, to
			// be written again: the client reads one frame, and the
			// next try lands on a buffer with some room.
			if queued != 2 || c.last != seq {
				c.mu.Unlock()
				t.Fatalf("a write the socket did not take left %d frames queued and last %d, want 2 and %d", queued, c.last, seq)
			}
			c.frames = nil
		}
		c.mu.Unlock()
		switch {
		case tail:
			return seq + 2
		case queued > 0:
			p.readMessage(t)
		default:
			seq += 2
		}
	}
	t.Fatal("no write was taken in part")
	return 0
}

// A write the socket takes only in part leaves the rest queued as a tail,
// and what follows (a pong to a client's ping, later messages) goes out
// after it: the client reads every frame whole and in order.
func TestTailGoesOutBeforeAnythingElse(t *testing.T) {
	p := newPair(t)
	c := p.c
	p.startReader()
	last := p.fillUntilTail(t)
	// A client's ping arrives while the tail waits: its pong is queued
	// behind the tail, not written by the library.
	if err := p.client.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the pong to be queued", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.frames) == 2
	})
	c.releaseWrites()
	c.deliver([]frame{{seq: last + 1, data: payload(last + 1)}})

	pong := make(chan string, 1)
	p.client.SetPongHandler(func(data string) error {
		pong <- data
		return nil
	})
	for p.read < last+1 {
		p.readMessage(t)
	}
	select {
	case got := <-pong:
		if got != "are you there" {
			t.Fatalf("pong %q", got)
		}
	default:
		t.Fatal("no pong among the frames")
	}
}

// A close asked for while a tail waits comes after the tail, not inside a
// frame; the rest of the queue is skipped, as for any close but a drain's.
func TestCloseWaitsForTheTail(t *testing.T) {
	p := newPair(t)
	c := p.c
	close(c.readerDone)
	last := p.fillUntilTail(t)
	c.mu.Lock()
	c.frames = append(c.frames, frame{seq: last + 1, data: payload(last + 1)})
	c.mu.Unlock()
	c.close(CloseTooSlow, "too slow")
	c.releaseWrites()
	p.readThenClose(t, last, CloseTooSlow)
	select {
	case <-c.writerDone:
	case <-time.After(10 * time.Second):
		t.Fatal("socket not closed after the close frame")
	}
	if _, err := c.netConn().Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
		t.Fatalf("server socket read after close: %v", err)
	}
}

// A client's close is answered with its code, through the queue (so after
// any tail), and the socket is closed.
func TestClientCloseIsEchoed(t *testing.T) {
	p := newPair(t)
	c := p.c
	p.startReader()
	c.deliver([]frame{{seq: 1, data: payload(1)}})
	p.readMessage(t)
	if err := p.client.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	_ = p.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := p.client.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
		t.Fatalf("after the client's close: %v, want its echo %d", err, websocket.CloseNormalClosure)
	}
	select {
	case <-c.writerDone:
	case <-time.After(10 * time.Second):
		t.Fatal("socket not closed after the echo")
	}
}

// A client that breaks the protocol while a tail waits gets the library's
// close frame after the tail, not inside a frame.
func TestProtocolErrorCloseWaitsForTheTail(t *testing.T) {
	p := newPair(t)
	c := p.c
	p.startReader()
	last := p.fillUntilTail(t)
	// A masked frame of the reserved opcode 3: the library answers it with
	// a close frame 1002 of its own, written from the reader goroutine.
	if _, err := p.client.NetConn().Write([]byte{0x83, 0x80, 1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the library's close frame to wait for the tail", func() bool {
		return c.sock.waiting.Load() == 1
	})
	c.releaseWrites()
	p.readThenClose(t, last, websocket.CloseProtocolError)
}

// While another write holds the socket (the library's, waiting for room in
// the socket's buffer), the fan-out reader does not wait for it: it queues
// the frames, and the writer sends them after that write.
func TestFanOutDoesNotWaitForAnotherWrite(t *testing.T) {
	p := newPair(t)
	c := p.c
	// A frame far bigger than both sockets' buffers, written as the
	// library writes: it holds the socket until the client reads.
	big := bytes.Repeat([]byte("b"), 1<<20)
	other := make(chan error, 1)
	go func() {
		_, err := c.sock.Write(appendTextFrame(nil, big))
		other <- err
	}()
	testenv.Eventually(t, "the other write to hold the socket", func() bool {
		if c.sock.mu.TryLock() {
			c.sock.mu.Unlock()
			return false
		}
		return true
	})
	delivered := make(chan struct{})
	go func() {
		c.deliver([]frame{{seq: 1, data: payload(1)}})
		close(delivered)
	}()
	select {
	case <-delivered:
	case <-time.After(30 * time.Second):
		t.Fatal("the fan-out reader waited for the other write: not back within 30s")
	}
	select {
	case err := <-other:
		t.Fatalf("the other write ended (%v) before the client read anything", err)
	default:
	}
	_ = p.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, data, err := p.client.ReadMessage()
	if err != nil || typ != websocket.TextMessage || !bytes.Equal(data, big) {
		t.Fatalf("first frame: type %d, %d bytes, %v; want the other write's whole", typ, len(data), err)
	}
	if err := <-other; err != nil {
		t.Fatal(err)
	}
	p.readMessage(t)
}
