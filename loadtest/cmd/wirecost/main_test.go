package main

import (
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestMain lets the test binary play the child that pinger starts
// (os.Args[0] -pong CPU).
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "-pong" {
		cpu, err := strconv.Atoi(os.Args[2])
		if err != nil {
			os.Exit(2)
		}
		os.Exit(ponger(cpu, 3, 4))
	}
	os.Exit(m.Run())
}

func TestPingerRoundTrips(t *testing.T) {
	cpus, err := allowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) != runtime.NumCPU() {
		t.Logf("this process may run on %d of %d CPUs: %v", len(cpus), runtime.NumCPU(), cpus)
	}
	// pinger pins the thread it runs on; the thread must get its CPUs
	// back before it returns to Go's pool.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var before cpuMask
	if err := getAffinity(&before); err != nil {
		t.Fatal(err)
	}
	for _, cpu := range cpus[:min(2, len(cpus))] {
		wall, cpuUS, err := pinger(2000, cpus[0], cpu)
		if err != nil {
			t.Fatalf("child on CPU %d: %v", cpu, err)
		}
		var after cpuMask
		if err := getAffinity(&after); err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Fatalf("after a run with the child on CPU %d the thread may run on %x, before on %x", cpu, after, before)
		}
		// Each round trip blocks in read(2) on both sides, so it takes
		// some time and some CPU; 0 would mean the trips did not happen.
		if wall <= 0 || cpuUS <= 0 {
			t.Fatalf("child on CPU %d: %.2f µs per round trip, %.2f CPU-µs: want both above 0", cpu, wall, cpuUS)
		}
	}
}

func TestPingerReportsAChildThatCannotPin(t *testing.T) {
	// A CPU the machine does not have: the child cannot pin itself, exits
	// 1, and pinger says so instead of timing a round trip that never came.
	if _, _, err := pinger(10, 0, 1000); err == nil {
		t.Fatal("pinger with the child on CPU 1000: no error")
	}
}

func TestEmptyReads(t *testing.T) {
	us, err := emptyReadCost(2000)
	if err != nil {
		t.Fatal(err)
	}
	// Each read is a system call, so 2000 of them take some CPU; 0 would
	// mean they were not made.
	if us <= 0 {
		t.Fatalf("%.3f CPU-µs per empty read: want above 0", us)
	}
}

func TestEmptyReadsRefuseASocketWithData(t *testing.T) {
	// The same loop on a socket the other side wrote to: the first read
	// finds data, and the measure must say so rather than time it.
	c, peer, err := loopbackPair()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer peer.Close()
	if _, err := peer.Write([]byte("frame")); err != nil {
		t.Fatal(err)
	}
	// Wait for the bytes by reading the first one; four stay for the loop.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := emptyReads(c, 10); err == nil {
		t.Fatal("empty reads of a socket with 4 bytes waiting: no error")
	}
}

func TestCheckFlags(t *testing.T) {
	// The defaults, and each measure on its own, are accepted.
	for _, ok := range [][2]int{{0, 0}, {100000, 0}, {0, 1000000}} {
		if err := checkFlags(1000, 10000, 160, 10*time.Second, ok[0], ok[1]); err != nil {
			t.Errorf("-wakeups %d -empty-reads %d: %v", ok[0], ok[1], err)
		}
	}
	bad := []struct {
		name                string
		conns, rate, size   int
		d                   time.Duration
		wakeups, emptyReads int
	}{
		{"no connections", 0, 10000, 160, time.Second, 0, 0},
		{"negative rate", 1000, -1, 160, time.Second, 0, 0},
		{"empty frames", 1000, 10000, 0, time.Second, 0, 0},
		{"no duration", 1000, 10000, 160, 0, 0, 0},
		{"negative wake-ups", 1000, 10000, 160, time.Second, -5, 0},
		{"negative empty reads", 1000, 10000, 160, time.Second, 0, -1},
		{"both measures", 1000, 10000, 160, time.Second, 10, 10},
	}
	for _, c := range bad {
		if err := checkFlags(c.conns, c.rate, c.size, c.d, c.wakeups, c.emptyReads); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}
