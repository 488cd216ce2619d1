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
// With -wakeups N it measures instead what it costs one process to wake
// another and be woken back: N one-byte round trips over two pipes between
// it and a child process (itself, started with -pong), each side blocked
// in read(2) until the other writes, once with both on the same CPU and
// once on two. Every message of the stack crosses
// several processes, each crossing a wake-up of this kind, and on some
// virtual machines a wake-up costs several times what it does on others.
//
// With -empty-reads N it measures what a read of an empty socket costs:
// N reads of a non-blocking loopback socket with nothing to read, each
// answered EAGAIN. A Go reader makes one after every frame it reads, as
// the poller looks once more before the goroutine parks.
//
//	go run ./loadtest/cmd/wirecost -conns 1000 -rate 10000 -size 160
//	go run ./loadtest/cmd/wirecost -wakeups 100000
//	go run ./loadtest/cmd/wirecost -empty-reads 1000000
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	conns := flag.Int("conns", 1000, "connections")
	rate := flag.Int("rate", 10000, "writes per second (all connections together)")
	size := flag.Int("size", 160, "bytes per write (a delivered chat frame is about 160)")
	duration := flag.Duration("duration", 10*time.Second, "how long to write")
	read := flag.String("read", "", "internal: run as the reader, accepting on this address")
	wakeups := flag.Int("wakeups", 0, "measure the wake-up round trip between two processes instead, over this many round trips")
	pong := flag.Int("pong", -1, "internal: run as the other side of -wakeups on this CPU, on fds 3 (read) and 4 (write)")
	emptyReads := flag.Int("empty-reads", 0, "measure a read of an empty socket instead (EAGAIN), over this many reads")
	flag.Parse()
	if err := checkFlags(*conns, *rate, *size, *duration, *wakeups, *emptyReads); err != nil {
		fmt.Fprintln(os.Stderr, "wirecost:", err)
		flag.Usage()
		os.Exit(2)
	}
	if *read != "" {
		reader(*read)
		return
	}
	if *pong >= 0 {
		os.Exit(ponger(*pong, 3, 4))
	}
	if *emptyReads > 0 {
		us, err := emptyReadCost(*emptyReads)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wirecost:", err)
			os.Exit(1)
		}
		fmt.Printf("read of an empty socket: %.3f CPU-µs\n", us)
		return
	}
	if *wakeups > 0 {
		if err := wakeupCost(*wakeups); err != nil {
			fmt.Fprintln(os.Stderr, "wirecost:", err)
			os.Exit(1)
		}
		return
	}
	if err := writer(*conns, *rate, *size, *duration); err != nil {
		fmt.Fprintln(os.Stderr, "wirecost:", err)
		os.Exit(1)
	}
}

// checkFlags refuses values no measure can use, and -wakeups with
// -empty-reads (each replaces the write measure, so only one can run).
func checkFlags(conns, rate, size int, d time.Duration, wakeups, emptyReads int) error {
	switch {
	case conns <= 0:
		return fmt.Errorf("-conns %d: want at least 1", conns)
	case rate <= 0:
		return fmt.Errorf("-rate %d: want at least 1 write per second", rate)
	case size <= 0:
		return fmt.Errorf("-size %d: want at least 1 byte", size)
	case d <= 0:
		return fmt.Errorf("-duration %v: want more than 0", d)
	case wakeups < 0:
		return fmt.Errorf("-wakeups %d: want a number of round trips, or 0 for none", wakeups)
	case emptyReads < 0:
		return fmt.Errorf("-empty-reads %d: want a number of reads, or 0 for none", emptyReads)
	case wakeups > 0 && emptyReads > 0:
		return fmt.Errorf("-wakeups and -empty-reads are two measures: give one")
	}
	return nil
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

// wakeupCost times n round trips with this process and the child on the
// first CPU it may run on (a context switch each way), then with the
// child on the second (a wake-up of the other CPU each way), and prints
// both. Unpinned, the kernel places the two wherever it likes, and the
// figure moves by half between runs.
func wakeupCost(n int) error {
	cpus, err := allowedCPUs()
	if err != nil {
		return err
	}
	same, sameCPU, err := pinger(n, cpus[0], cpus[0])
	if err != nil {
		return err
	}
	fmt.Printf("wake-up round trip, same CPU: %.2f µs (CPU %.2f µs)\n", same, sameCPU)
	if len(cpus) < 2 {
		return nil
	}
	across, acrossCPU, err := pinger(n, cpus[0], cpus[1])
	if err != nil {
		return err
	}
	fmt.Printf("wake-up round trip, across CPUs: %.2f µs (CPU %.2f µs)\n", across, acrossCPU)
	return nil
}

// pinger starts the child on CPU childCPU, then times n round trips from
// CPU cpu: write a byte to the child, block until it writes one back. It
// returns the µs per round trip, of the clock and of the two threads'
// CPU (user + system) together. Both pipes are blocking and used with raw
// system calls from a locked thread, so that each side sleeps in the
// kernel's read(2) and is woken by the other's write, with no Go poller in
// between.
func pinger(n, cpu, childCPU int) (wall, cpuUS float64, err error) {
	var toChild, fromChild [2]int
	if err := syscall.Pipe2(toChild[:], syscall.O_CLOEXEC); err != nil {
		return 0, 0, err
	}
	if err := syscall.Pipe2(fromChild[:], syscall.O_CLOEXEC); err != nil {
		return 0, 0, err
	}
	defer syscall.Close(fromChild[0])
	cmd := exec.Command(os.Args[0], "-pong", strconv.Itoa(childCPU))
	cmd.ExtraFiles = []*os.File{os.NewFile(uintptr(toChild[0]), "ping"), os.NewFile(uintptr(fromChild[1]), "pong")}
	var childOut strings.Builder
	cmd.Stdout, cmd.Stderr = &childOut, os.Stderr
	err = cmd.Start()
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	if err != nil {
		syscall.Close(toChild[1])
		return 0, 0, err
	}
	// The thread goes back to Go's pool afterwards: give it back the CPUs
	// it had.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var had cpuMask
	if err := getAffinity(&had); err != nil {
		syscall.Close(toChild[1])
		_ = cmd.Wait()
		return 0, 0, err
	}
	defer func() { _ = setAffinity(&had) }()
	pinErr := pin(cpu)
	b := []byte{1}
	trip := func() error {
		if _, err := syscall.Write(toChild[1], b); err != nil {
			return err
		}
		n, err := syscall.Read(fromChild[0], b)
		if err == nil && n == 0 {
			err = io.ErrUnexpectedEOF // the child is gone
		}
		return err
	}
	var elapsed time.Duration
	var cpu0, cpu1 float64
	if pinErr == nil {
		for range 1000 { // both sides running and scheduled once
			if err = trip(); err != nil {
				break
			}
		}
		cpu0 = threadCPUSeconds()
		start := time.Now()
		for i := 0; i < n && err == nil; i++ {
			err = trip()
		}
		elapsed = time.Since(start)
		cpu1 = threadCPUSeconds()
	}
	syscall.Close(toChild[1]) // the child reads EOF, prints its CPU and exits
	if werr := cmd.Wait(); werr != nil {
		return 0, 0, fmt.Errorf("pong: %w", werr)
	}
	if pinErr != nil {
		return 0, 0, fmt.Errorf("pin to CPU %d: %w", cpu, pinErr)
	}
	if err != nil {
		return 0, 0, err
	}
	// The child's figure covers its warm-up round trips too (1000 of them,
	// against the 100 000 a run makes by default).
	var pongCPU float64
	if _, err := fmt.Sscanf(strings.TrimSpace(childOut.String()), "%f", &pongCPU); err != nil {
		return 0, 0, fmt.Errorf("pong's CPU %q: %w", childOut.String(), err)
	}
	per := 1e6 / float64(n)
	return elapsed.Seconds() * per, (cpu1 - cpu0 + pongCPU) * per, nil
}

// ponger pins itself to cpu, then answers every byte read from in with
// one written to out, until in ends; then it prints its thread's CPU
// seconds and returns the exit code.
func ponger(cpu, in, out int) int {
	runtime.LockOSThread()
	if err := pin(cpu); err != nil {
		fmt.Fprintf(os.Stderr, "wirecost pong: pin to CPU %d: %v\n", cpu, err)
		return 1
	}
	b := []byte{0}
	for {
		n, err := syscall.Read(in, b)
		if err != nil {
			return 1
		}
		if n == 0 {
			fmt.Printf("%.6f\n", threadCPUSeconds())
			return 0
		}
		if _, err := syscall.Write(out, b); err != nil {
			return 1
		}
	}
}

// allowedCPUs lists the CPUs this thread may run on (sched_getaffinity(2)),
// which in a container need not start at 0.
func allowedCPUs() ([]int, error) {
	var mask cpuMask
	if err := getAffinity(&mask); err != nil {
		return nil, err
	}
	var cpus []int
	for i := range len(mask) * 64 {
		if mask[i/64]&(1<<(i%64)) != 0 {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) == 0 {
		return nil, fmt.Errorf("no CPU in this thread's affinity mask")
	}
	return cpus, nil
}

// cpuMask is a CPU set for sched_getaffinity(2) and sched_setaffinity(2),
// of up to 1024 CPUs.
type cpuMask [16]uint64

func getAffinity(m *cpuMask) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETAFFINITY, 0, unsafe.Sizeof(*m), uintptr(unsafe.Pointer(&m[0])))
	if e != 0 {
		return e
	}
	return nil
}

func setAffinity(m *cpuMask) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, 0, unsafe.Sizeof(*m), uintptr(unsafe.Pointer(&m[0])))
	if e != 0 {
		return e
	}
	return nil
}

// pin binds the calling thread to one CPU.
func pin(cpu int) error {
	if cpu < 0 || cpu >= len(cpuMask{})*64 {
		return syscall.EINVAL
	}
	var m cpuMask
	m[cpu/64] = 1 << (cpu % 64)
	return setAffinity(&m)
}

// rusageThread is Linux's RUSAGE_THREAD, which package syscall lacks.
const rusageThread = 1

// emptyReadCost opens a loopback connection that carries nothing and
// returns the CPU-µs (user + system) of one read of it, over n reads from
// one locked thread.
func emptyReadCost(n int) (float64, error) {
	c, peer, err := loopbackPair()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	defer peer.Close()
	return emptyReads(c, n)
}

// loopbackPair returns both ends of a new TCP connection on 127.0.0.1.
func loopbackPair() (c *net.TCPConn, peer net.Conn, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		a, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- a
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	peer, ok := <-accepted
	if !ok {
		d.Close()
		return nil, nil, fmt.Errorf("accept on %s failed", ln.Addr())
	}
	return d.(*net.TCPConn), peer, nil
}

// emptyReads reads c n times from one locked thread, each read expected
// to find nothing (EAGAIN; a Go socket is non-blocking), and returns the
// thread's CPU-µs per read. A read that finds data or fails otherwise is
// an error: then what was timed was not an empty read.
func emptyReads(c *net.TCPConn, n int) (float64, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var buf [4096]byte
	var cpu float64
	var readErr error
	err = raw.Control(func(fd uintptr) {
		// The kernel brings a running thread's CPU time up to date only at
		// a tick or when the thread stops running: a short sleep before
		// each reading makes both exact.
		time.Sleep(time.Millisecond)
		start := threadCPUSeconds()
		for i := range n {
			if got, err := syscall.Read(int(fd), buf[:]); err != syscall.EAGAIN {
				readErr = fmt.Errorf("read %d of an empty socket: %d bytes, %v (want EAGAIN)", i+1, got, err)
				return
			}
		}
		time.Sleep(time.Millisecond)
		cpu = threadCPUSeconds() - start
	})
	if err != nil {
		return 0, err
	}
	if readErr != nil {
		return 0, readErr
	}
	return cpu * 1e6 / float64(n), nil
}

// threadCPUSeconds is the calling thread's CPU time: with the goroutine
// locked to its thread, what the wake-ups cost it, without the runtime's
// other threads.
func threadCPUSeconds() float64 { return cpuSecondsOf(rusageThread) }

// cpuSeconds is the whole process's CPU time.
func cpuSeconds() float64 { return cpuSecondsOf(syscall.RUSAGE_SELF) }

// cpuSecondsOf is getrusage(2)'s user + system time for who.
func cpuSecondsOf(who int) float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
