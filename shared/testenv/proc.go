package testenv

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Output collects a process's output for failure reports; it is safe for
// concurrent writes and reads.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// BuildBinaries builds each package (an import path with a main) into dir,
// named after its last path element, with extra go build flags; for
// TestMain, before the tests that run the binaries.
func BuildBinaries(dir string, flags []string, pkgs ...string) error {
	for _, pkg := range pkgs {
		args := append([]string{"build"}, flags...)
		args = append(args, "-o", filepath.Join(dir, filepath.Base(pkg)), pkg)
		cmd := exec.Command("go", args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", pkg, err)
		}
	}
	return nil
}

// Proc is a running binary started by StartBinary.
type Proc struct {
	Name string
	Out  *Output
	// Addrs maps each awaited log message to the "addr" it logged.
	Addrs map[string]string
}

// StartBinary runs the binary at path with env (and PATH) and waits, at
// most wait, until it has logged (JSON lines on stdout) every message in
// want with an "addr" attribute (with no want it returns once started).
// When the test ends it sends SIGTERM and
// reports an error unless the process exits cleanly within wait; its output
// is logged when the test failed.
func StartBinary(t testing.TB, path string, env []string, wait time.Duration, want ...string) *Proc {
	t.Helper()
	name := filepath.Base(path)
	cmd := exec.Command(path)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &Proc{Name: name, Out: &Output{}, Addrs: map[string]string{}}
	cmd.Stderr = p.Out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	found := make(chan map[string]string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		addrs := map[string]string{}
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.Out, line)
			var e struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &e) == nil && e.Addr != "" && slices.Contains(want, e.Msg) {
				addrs[e.Msg] = e.Addr
				if len(addrs) == len(want) {
					found <- addrs
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	exited := make(chan error, 1)
	go func() {
		<-scanned
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("%s exited with %v", name, err)
			}
		case <-time.After(wait):
			_ = cmd.Process.Kill()
			t.Errorf("%s did not stop within %v of SIGTERM", name, wait)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.Out.String())
		}
	})
	if len(want) == 0 {
		return p
	}
	select {
	case p.Addrs = <-found:
	case err := <-exited:
		exited <- err
		t.Fatalf("%s exited before listening (%v):\n%s", name, err, p.Out.String())
	case <-time.After(wait):
		t.Fatalf("%s did not log %v within %v:\n%s", name, want, wait, p.Out.String())
	}
	return p
}
