package testenv_test

import (
	"bufio"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"rooms/shared/testenv"
)

// TestProxyCutAndHeal: bytes pass through the proxy; while it is cut
// nothing passes on an open connection or on one opened during the cut,
// and after Heal what was held arrives, in order.
func TestProxyCutAndHeal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	p := testenv.StartProxy(t, ln.Addr().String())
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	echo := func(c net.Conn, r *bufio.Reader, want string) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := r.ReadString('\n')
		if err != nil || got != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	silent := func(c net.Conn, r *bufio.Reader) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if got, err := r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read %q, %v during the cut; want nothing", got, err)
		}
	}
	a, ar := dial()
	a.Write([]byte("one\n"))
	echo(a, ar, "one\n")

	p.Cut()
	a.Write([]byte("two\n"))
	silent(a, ar)
	b, br := dial() // accepted, but nothing reaches the server
	b.Write([]byte("three\n"))
	silent(b, br)

	p.Heal()
	echo(a, ar, "two\n")
	echo(b, br, "three\n")
	a.Write([]byte("four\n"))
	echo(a, ar, "four\n")
}
