package consume

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Failpoint names a crash point for fault tests. It is off unless the
// worker's ROOMS_FAILPOINT is set; production never sets it.
//
// ROOMS_FAILPOINT=<point>:<n>[:<action>] acts the n-th time the worker
// reaches <point> (n defaults to 1):
//
//	in-tx         a batch's rows are inserted, its transaction not committed
//	after-commit  a batch is committed in PostgreSQL; not yet appended to
//	              Redis, its offsets not stored
//
// The action is kill (the default: SIGKILL, as if the machine died there)
// or stop (SIGSTOP: the process freezes there, its connections open, as in
// a long pause of its machine, until a SIGCONT lets it go on).
type Failpoint struct {
	point string
	n     int64
	stop  bool
	hits  atomic.Int64
}

// Failpoint names.
const (
	FailInTx        = "in-tx"
	FailAfterCommit = "after-commit"
)

// ParseFailpoint parses ROOMS_FAILPOINT; "" gives nil (off).
func ParseFailpoint(spec string) (*Failpoint, error) {
	if spec == "" {
		return nil, nil
	}
	point, rest, _ := strings.Cut(spec, ":")
	count, action, _ := strings.Cut(rest, ":")
	n := int64(1)
	if count != "" {
		v, err := strconv.ParseInt(count, 10, 64)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("ROOMS_FAILPOINT %q: count must be a positive integer", spec)
		}
		n = v
	}
	if point != FailInTx && point != FailAfterCommit {
		return nil, fmt.Errorf("ROOMS_FAILPOINT %q: unknown point (want %s or %s)", spec, FailInTx, FailAfterCommit)
	}
	if action != "" && action != "kill" && action != "stop" {
		return nil, fmt.Errorf("ROOMS_FAILPOINT %q: unknown action (want kill or stop)", spec)
	}
	return &Failpoint{point: point, n: n, stop: action == "stop"}, nil
}

// Stops reports whether f freezes the process rather than killing it.
func (f *Failpoint) Stops() bool { return f != nil && f.stop }

// Hit kills or stops the process when point is f's point reached for the
// n-th time. A nil Failpoint does nothing.
func (f *Failpoint) Hit(point string) {
	if f == nil || point != f.point {
		return
	}
	if f.hits.Add(1) == f.n {
		if f.stop {
			// Sent to this thread, which takes it on its way back from
			// the system call and stops the whole process before it runs
			// another instruction of its own: sent to the process, it
			// may be taken by another thread while this one goes on for
			// a moment (and sends its COMMIT). Then every thread is
			// stopped: no heartbeat, no read or write on any
			// connection, until SIGCONT.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			_ = syscall.Tgkill(syscall.Getpid(), syscall.Gettid(), syscall.SIGSTOP)
			return
		}
		// SIGKILL, not an exit: no deferred function, no flush, no commit.
		_ = syscall.Kill(syscall.Getpid(), syscall.SIGKILL)
		select {} // the signal is delivered asynchronously
	}
}
