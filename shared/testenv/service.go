package testenv

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Service is one restartable process of a test stack (a gateway, a worker,
// the broker, a Redis server), its output appended to a log file.
type Service struct {
	Name string
	Bin  string
	Args []string
	Env  []string // added to the test's environment
	// Addr is what Ready waits for: a gateway's HTTP host:port, or a
	// server's listening address.
	Addr string
	// Ready is how Start knows the process is up: "http" (GET /readyz
	// answers 200), "tcp" (Addr accepts a connection) or "" (no wait).
	Ready string
	Log   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs the process (again) and waits until it is ready; the test
// fails if it exits first.
func (p *Service) Start(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "---- start %s at %s ----\n", p.Name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.Name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	switch p.Ready {
	case "http":
		WaitFor(t, p.Name+" ready", 90*time.Second, done, func() bool {
			c := http.Client{Timeout: 2 * time.Second}
			resp, err := c.Get("http://" + p.Addr + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	case "tcp":
		WaitFor(t, p.Name+" listening", 60*time.Second, done, func() bool {
			c, err := net.DialTimeout("tcp", p.Addr, time.Second)
			if err != nil {
				return false
			}
			c.Close()
			return true
		})
	}
}

// Exited is closed when the current run of the process has ended.
func (p *Service) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

// PID is the running process's id, 0 when it is not running.
func (p *Service) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Frozen reports whether the running process is stopped by a signal
// (SIGSTOP): state T in /proc/<pid>/stat.
func (p *Service) Frozen() bool {
	pid := p.PID()
	if pid == 0 {
		return false
	}
	f := procStat(pid)
	return len(f) > 0 && f[0] == "T"
}

// Stop sends sig and waits (at most 60 s, then SIGKILL) for the exit; it
// returns the exit error.
func (p *Service) Stop(t testing.TB, sig syscall.Signal) error {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
	default:
		_ = cmd.Process.Signal(sig)
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("%s did not exit within 60s of %v", p.Name, sig)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cmd = nil
	return p.err
}

// LogCount counts the lines of the process's log containing s.
func (p *Service) LogCount(s string) int {
	f, err := os.Open(p.Log)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// RSSMB is the process's resident memory in MB (0 when it is not running).
func (p *Service) RSSMB() float64 {
	pid := p.PID()
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// WaitFor polls cond every 100 ms until it holds; it fails the test after
// timeout, or when exited (if not nil) is closed first.
func WaitFor(t testing.TB, what string, timeout time.Duration, exited <-chan struct{}, cond func() bool) {
	t.Helper()
	poll(t, what, timeout, 100*time.Millisecond, exited, cond)
}

// Eventually polls cond every 10 ms until it holds and fails the test
// after 30 s, a bound on waiting for something in the test's own process
// (a goroutine, a server in the test), not a timing assertion.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll(t, what, 30*time.Second, 10*time.Millisecond, nil, cond)
}

func poll(t testing.TB, what string, timeout, every time.Duration, exited <-chan struct{}, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if exited != nil {
			select {
			case <-exited:
				t.Fatalf("process exited while waiting for %s", what)
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(every)
	}
}
