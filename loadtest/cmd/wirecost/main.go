// Command wirecost measures what one small write to a loopback TCP socket
// costs on this machine: the floor under the gateway's cost per delivered
// message, which writes each delivery to its client's socket.
//
// It opens -conns connections to a reader process (itself, started with
// -read), writes -size-byte frames over them round-robin at -rate writes/s
// for -duration, and reports the CPU time per write of the writing process
// and of the reading one (getrusage: user + system, which includes the
// kernel's TCP work on loopback).
//
//	go run ./loadtest/cmd/wirecost -conns 1000 -rate 10000 -size 160
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

func main() {
	conns := flag.Int("conns", 1000, "connections")
	rate := flag.Int("rate", 10000, "writes per second (all connections together)")
	size := flag.Int("size", 160, "bytes per write (a delivered chat frame is about 160)")
	duration := flag.Duration("duration", 10*time.Second, "how long to write")
	read := flag.String("read", "", "internal: run as the reader, accepting on this address")
	flag.Parse()
	if *read != "" {
		reader(*read)
		return
	}
	if err := writer(*conns, *rate, *size, *duration); err != nil {
		fmt.Fprintln(os.Stderr, "wirecost:", err)
		os.Exit(1)
	}
}

// reader accepts connections and discards what they carry until stdin
// closes, then prints its CPU seconds.
func reader(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wirecost reader:", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	_, _ = io.Copy(io.Discard, os.Stdin)
	fmt.Printf("%.6f\n", cpuSeconds())
}

func writer(n, rate, size int, d time.Duration) error {
	cmd := exec.Command(os.Args[0], "-read", "127.0.0.1:0")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	out := bufio.NewReader(stdout)
	addr, err := out.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reader address: %w", err)
	}
	addr = strings.TrimSpace(addr)
	cs := make([]net.Conn, n)
	for i := range cs {
		if cs[i], err = net.Dial("tcp", addr); err != nil {
			return err
		}
	}
	frame := make([]byte, size)
	time.Sleep(500 * time.Millisecond) // let the reader settle
	start := time.Now()
	cpu0 := cpuSeconds()
	interval := time.Second / time.Duration(rate)
	writes := 0
	for next := start; time.Since(start) < d; {
		if w := time.Until(next); w > 0 {
			time.Sleep(w)
		}
		// Catch up on the timetable without a sleep per write.
		for due := time.Now(); !next.After(due); next = next.Add(interval) {
			if _, err := cs[writes%n].Write(frame); err != nil {
				return err
			}
			writes++
		}
	}
	elapsed := time.Since(start)
	cpu := cpuSeconds() - cpu0
	_ = stdin.Close()
	rs, err := out.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reader cpu: %w", err)
	}
	var readerCPU float64
	fmt.Sscanf(strings.TrimSpace(rs), "%f", &readerCPU)
	_ = cmd.Wait()
	fmt.Printf("writes: %d in %.1fs (%.0f/s) over %d connections, %d B each\n", writes, elapsed.Seconds(), float64(writes)/elapsed.Seconds(), n, size)
	fmt.Printf("writer CPU: %.2fs = %.2f µs per write\n", cpu, cpu/float64(writes)*1e6)
	fmt.Printf("reader CPU (whole life, incl. accepting): %.2fs = %.2f µs per read\n", readerCPU, readerCPU/float64(writes)*1e6)
	return nil
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
