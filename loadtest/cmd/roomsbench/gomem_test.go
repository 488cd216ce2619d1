package main

import (
	"strings"
	"testing"
)

func TestParseGoInUse(t *testing.T) {
	text := `# HELP go_memstats_heap_inuse_bytes Number of heap bytes that are in use.
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 1.2e+07
go_memstats_heap_inuse_bytes_total 5
go_memstats_stack_inuse_bytes 3.5e+06
go_goroutines 12
`
	got, err := parseGoInUse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if got != (goMem{Heap: 12_000_000, Stack: 3_500_000}) || got.total() != 15_500_000 {
		t.Fatalf("got %+v, want heap 12000000 and stack 3500000", got)
	}
	if _, err := parseGoInUse(strings.NewReader("go_goroutines 3\n")); err == nil {
		t.Fatal("no error for metrics without the memory gauges")
	}
}
