package testenv

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Freeze stops the processes pids with SIGSTOP: their connections stay
// open and silent, as with a machine that pauses or a network that drops
// everything without a reset. It returns thaw, which lets them go on
// (SIGCONT); a test that ends before thaw thaws them itself. A failed
// signal fails the test.
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
