package testenv

import (
	"fmt"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// StartRedisServer starts a private redis-server on a free loopback port,
// without persistence (a restart starts empty), for a test that stops,
// kills or freezes it. Its output goes to redis.log in logDir; it is
// killed when the test ends if it still runs. Addr is its address.
func StartRedisServer(t testing.TB, logDir string) *Service {
	t.Helper()
	port := FreePort(t)
	s := &Service{Name: "redis", Bin: "redis-server", Addr: fmt.Sprintf("127.0.0.1:%d", port), Ready: "tcp",
		Args: []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()},
		Log:  filepath.Join(logDir, "redis.log")}
	s.Start(t)
	t.Cleanup(func() { _ = s.Stop(t, syscall.SIGKILL) })
	return s
}
