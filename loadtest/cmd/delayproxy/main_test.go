package main

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// echo serves one connection at a time, writing back what it reads.
func echo(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

func proxy(t *testing.T, to string, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { serve(ctx, l, to, delay); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return l.Addr().String()
}

// Bytes come back whole and in order through the proxy, in many chunks.
func TestForwardsEveryByteInOrder(t *testing.T) {
	addr := proxy(t, echo(t), 200*time.Microsecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := rand.New(rand.NewPCG(1, 2))
	var sent bytes.Buffer
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(c)
		got <- b
	}()
	for range 500 {
		chunk := make([]byte, 1+r.IntN(4000))
		for i := range chunk {
			chunk[i] = byte(r.Uint32())
		}
		sent.Write(chunk)
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, sent.Bytes()) {
			t.Fatalf("got %d bytes back, sent %d; equal: false", len(b), sent.Len())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no end of the echo within 30 s")
	}
}

// A round trip through the proxy takes at least twice the delay (a lower
// bound: the proxy sleeps that long; nothing here depends on how fast the
// machine is).
func TestRoundTripTakesTwiceTheDelay(t *testing.T) {
	const delay = 30 * time.Millisecond
	addr := proxy(t, echo(t), delay)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4)
	for range 3 {
		start := time.Now()
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 2*delay {
			t.Fatalf("round trip took %s, less than twice the delay %s", took, delay)
		}
		if string(buf) != "ping" {
			t.Fatalf("got %q back", buf)
		}
	}
}

// A connection to a server that is not there is closed, and the proxy
// goes on serving.
func TestUnreachableTargetClosesTheClient(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := l.Addr().String()
	l.Close()
	addr := proxy(t, gone, 0)
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read from a proxied connection to nowhere: %v, want EOF", err)
		}
		c.Close()
	}
}
