package consume

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Failpoint names a crash point for fault tests. It is off unless the
// worker's ROOMS_FAILPOINT is set; production never sets it.
//
// ROOMS_FAILPOINT=<point>:<n> makes the worker kill itself with SIGKILL the
// n-th time it reaches <point> (n defaults to 1), as if the machine died
// there:
//
//	in-tx         a batch's rows are inserted, its transaction not committed
//	after-commit  a batch is committed in PostgreSQL; not yet appended to
//	              Redis, its offsets not stored
type Failpoint struct {
	point string
	n     int64
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
	point, count, _ := strings.Cut(spec, ":")
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
	return &Failpoint{point: point, n: n}, nil
}

// Hit kills the process when point is f's point reached for the n-th time.
// A nil Failpoint does nothing.
func (f *Failpoint) Hit(point string) {
	if f == nil || point != f.point {
		return
	}
	if f.hits.Add(1) == f.n {
		// SIGKILL, not an exit: no deferred function, no flush, no commit.
		_ = syscall.Kill(syscall.Getpid(), syscall.SIGKILL)
		select {} // the signal is delivered asynchronously
	}
}
