// Command delayproxy forwards TCP connections to one address and holds
// every chunk it forwards for -delay, in each direction, so that a round
// trip through it takes at least twice -delay: a server on the same machine
// then answers as if it were across a network.
//
// The benchmark uses it to measure what round trips to PostgreSQL cost a
// worker (change 15 in docs/performance.md): start it, point the workers'
// DATABASE_URL at it (config/worker-N.env), restart the stack.
//
//	go run ./loadtest/cmd/delayproxy -listen 127.0.0.1:55432 -to 127.0.0.1:5432 -delay 500us
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:55432", "address to accept on")
	to := flag.String("to", "127.0.0.1:5432", "address to forward to")
	delay := flag.Duration("delay", 500*time.Microsecond, "how long each chunk is held, in each direction")
	flag.Parse()
	if *delay < 0 {
		fmt.Fprintf(os.Stderr, "delayproxy: -delay %s: give a duration of 0 or more\n", *delay)
		os.Exit(2)
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "delayproxy: unexpected argument %q (all settings are flags)\n", flag.Arg(0))
		os.Exit(2)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "delayproxy:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Printf("delayproxy: %s -> %s, %s each way", l.Addr(), *to, *delay)
	serve(ctx, l, *to, *delay)
}

// serve accepts on l until ctx ends and forwards each connection to to.
func serve(ctx context.Context, l net.Listener, to string, delay time.Duration) {
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Print("delayproxy: ", err)
			}
			return
		}
		go forward(c, to, delay)
	}
}

// forward joins c to a new connection to to. When one side ends its
// sending, what it sent is still delivered and the other side sees the end
// (a half close); the connections close once both directions ended. An
// error in either direction closes both.
func forward(c net.Conn, to string, delay time.Duration) {
	u, err := net.Dial("tcp", to)
	if err != nil {
		log.Print("delayproxy: ", err)
		c.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { pipe(u, c, delay); done <- struct{}{} }()
	go func() { pipe(c, u, delay); done <- struct{}{} }()
	<-done
	<-done
	c.Close()
	u.Close()
}

type chunk struct {
	due  time.Time
	data []byte
}

// pipe copies src to dst, each chunk written delay after it was read, in
// the order read. At src's end, once everything is written, it closes
// dst's sending side; on an error it closes both.
func pipe(dst, src net.Conn, delay time.Duration) {
	q := make(chan chunk, 1024)
	written := make(chan struct{})
	go func() {
		defer close(written)
		for c := range q {
			time.Sleep(time.Until(c.due))
			if _, err := dst.Write(c.data); err != nil {
				dst.Close()
				src.Close() // ends the reader below
				for range q {
				}
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	var rerr error
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- chunk{time.Now().Add(delay), append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			rerr = err
			break
		}
	}
	close(q)
	<-written
	// After a failed write both are closed already, and closing again
	// does nothing.
	if errors.Is(rerr, io.EOF) {
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
			return
		}
	}
	dst.Close()
	src.Close()
}
