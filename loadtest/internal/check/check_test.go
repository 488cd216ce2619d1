package check_test

import (
	"testing"

	"rooms/loadtest/internal/check"
)

// delivery is one message frame as a receiver sees it.
type delivery struct {
	seq       int64
	sender, n int
}

func TestReceiver(t *testing.T) {
	tests := []struct {
		name  string
		start int64
		acked [][2]int // (sender, n)
		got   []delivery
		want  check.Totals
	}{
		{
			name:  "all in order",
			start: 10,
			acked: [][2]int{{0, 0}, {1, 0}, {0, 1}},
			got:   []delivery{{11, 0, 0}, {12, 1, 0}, {13, 0, 1}},
			want:  check.Totals{Received: 3, Expected: 3},
		},
		{
			name:  "one lost with a seq gap",
			acked: [][2]int{{0, 0}, {0, 1}, {0, 2}},
			got:   []delivery{{1, 0, 0}, {3, 0, 2}},
			want:  check.Totals{Received: 2, Expected: 3, Lost: 1, SeqGaps: 1},
		},
		{
			name:  "duplicate under a new seq",
			acked: [][2]int{{0, 0}},
			got:   []delivery{{1, 0, 0}, {2, 0, 0}},
			want:  check.Totals{Received: 1, Expected: 1, Dups: 1},
		},
		{
			name:  "seq repeated",
			acked: [][2]int{{0, 0}, {0, 1}},
			got:   []delivery{{1, 0, 0}, {1, 0, 1}},
			want:  check.Totals{Received: 2, Expected: 2, SeqRepeats: 1},
		},
		{
			name:  "sender order broken",
			acked: [][2]int{{0, 0}, {0, 1}},
			got:   []delivery{{1, 0, 1}, {2, 0, 0}},
			want:  check.Totals{Received: 2, Expected: 2, Reorders: 1},
		},
		{
			name:  "refused sends are not expected, unacked deliveries are fine",
			acked: [][2]int{{0, 0}, {0, 2}},
			got:   []delivery{{1, 0, 0}, {2, 0, 1}, {3, 0, 2}},
			want:  check.Totals{Received: 3, Expected: 2},
		},
		{
			name:  "first seq without welcome starts the count",
			start: -1,
			acked: [][2]int{{1, 0}},
			got:   []delivery{{7, 1, 0}},
			want:  check.Totals{Received: 1, Expected: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			room := check.NewRoom(2)
			rc := room.NewReceiver()
			if tt.start >= 0 {
				rc.Start(tt.start)
			}
			for _, a := range tt.acked {
				room.Acked(a[0], a[1])
			}
			for _, d := range tt.got {
				rc.Seq(d.seq)
				rc.Message(d.sender, d.n)
			}
			if got := room.Totals(); got != tt.want {
				t.Errorf("totals = %+v, want %+v", got, tt.want)
			}
			if tt.want.Broken() != (tt.want.Lost+tt.want.Dups+tt.want.Reorders+tt.want.SeqGaps+tt.want.SeqRepeats > 0) {
				t.Errorf("Broken() disagrees with the counters")
			}
		})
	}
}

func TestResumeKeepsPosition(t *testing.T) {
	room := check.NewRoom(1)
	rc := room.NewReceiver()
	rc.Start(0)
	rc.Seq(1)
	rc.Message(0, 0)
	// A resume's welcome carries the room's newer last_seq: it must not move
	// the receiver's position, or the replayed seqs would look repeated.
	rc.Start(5)
	if got := rc.LastSeq(); got != 1 {
		t.Fatalf("LastSeq after resume welcome = %d, want 1", got)
	}
	for seq := int64(2); seq <= 5; seq++ {
		rc.Seq(seq)
		rc.Message(0, int(seq-1))
	}
	for n := range 5 {
		room.Acked(0, n)
	}
	if got := room.Totals(); got.Broken() || got.Received != 5 {
		t.Fatalf("totals = %+v", got)
	}
	if !rc.Has(0, 4) || rc.Has(0, 5) {
		t.Fatal("Has disagrees with the deliveries")
	}
}

func TestManyReceiversAndLargeCounters(t *testing.T) {
	room := check.NewRoom(3)
	a, b := room.NewReceiver(), room.NewReceiver()
	a.Start(0)
	b.Start(0)
	seq := int64(0)
	for n := range 1000 {
		for s := range 3 {
			room.Acked(s, n)
			seq++
			a.Seq(seq)
			a.Message(s, n)
			if n != 500 || s != 2 {
				b.Seq(seq)
				b.Message(s, n)
			}
		}
	}
	got := room.Totals()
	want := check.Totals{Received: 5999, Expected: 6000, Lost: 1, SeqGaps: 1}
	if got != want {
		t.Fatalf("totals = %+v, want %+v", got, want)
	}
}
