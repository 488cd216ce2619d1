package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"rooms/loadtest/internal/admin"
)

// goMem is the Go memory a gateway holds in use: heap spans and goroutine
// stacks.
type goMem struct{ Heap, Stack int64 }

func (m goMem) total() int64 { return m.Heap + m.Stack }

// goInUse is the Go memory a gateway holds in use right after a garbage
// collection: its admin server's pprof heap endpoint is asked to collect
// first (gc=1), then heap and stack in-use bytes are read from /metrics.
// Unlike RSS it does not move with where the collector is in its cycle.
func goInUse(ctx context.Context, base string) (goMem, error) {
	resp, err := admin.Get(ctx, base, "/debug/pprof/heap?gc=1")
	if err != nil {
		return goMem{}, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	resp, err = admin.Get(ctx, base, "/metrics")
	if err != nil {
		return goMem{}, err
	}
	defer resp.Body.Close()
	return parseGoInUse(resp.Body)
}

// parseGoInUse reads go_memstats_heap_inuse_bytes and
// go_memstats_stack_inuse_bytes of a Prometheus text exposition.
func parseGoInUse(r io.Reader) (goMem, error) {
	var m goMem
	want := map[string]*int64{"go_memstats_heap_inuse_bytes": &m.Heap, "go_memstats_stack_inuse_bytes": &m.Stack}
	found := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		dst := want[name]
		if !ok || dst == nil {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return goMem{}, fmt.Errorf("%s: %w", name, err)
		}
		*dst = int64(v)
		found++
	}
	if err := sc.Err(); err != nil {
		return goMem{}, err
	}
	if found != len(want) {
		return goMem{}, fmt.Errorf("metrics lack go_memstats_heap_inuse_bytes or go_memstats_stack_inuse_bytes")
	}
	return m, nil
}

// goInUseAll sums goInUse over the admin URLs.
func goInUseAll(ctx context.Context, admins []string) (goMem, error) {
	var sum goMem
	for _, a := range admins {
		v, err := goInUse(ctx, a)
		if err != nil {
			return goMem{}, err
		}
		sum.Heap += v.Heap
		sum.Stack += v.Stack
	}
	return sum, nil
}
