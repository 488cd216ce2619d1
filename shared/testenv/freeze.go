package testenv

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Freeze stops the processes pids with SIGSTOP: their connections stay
// open and silent, as with a machine that pauses or a network that drops
// everything without a reset. It returns thaw, which lets them go on
// (SIGCONT); a test that ends before thaw thaws them itself. A failed
// signal fails the test. Freeze returns once every process has stopped
// (kill only queues the signal), so a process that forks has no child
// from then on that was not there when Freeze returned.
func Freeze(t testing.TB, pids ...int) (thaw func()) {
	t.Helper()
	signal := func(sig syscall.Signal) {
		for _, pid := range pids {
			if err := syscall.Kill(pid, sig); err != nil {
				t.Errorf("%v to %d: %v", sig, pid, err)
			}
		}
	}
	signal(syscall.SIGSTOP)
	for _, pid := range pids {
		deadline := time.Now().Add(10 * time.Second)
		for {
			f := procStat(pid)
			if f == nil || f[0] == "T" || f[0] == "t" || f[0] == "Z" {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("process %d not stopped 10 s after SIGSTOP (state %s)", pid, f[0])
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	return func() { signal(syscall.SIGCONT) }
}

// procStat is the fields of /proc/<pid>/stat after the command name: the
// state first, then the parent's pid, and so on. It is nil when the
// process is gone. The name may hold spaces and parentheses, so the fields
// are counted after its last ')'.
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}
