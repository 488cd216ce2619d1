package gen_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"rooms/loadtest/internal/gen"
)

func TestTimetable(t *testing.T) {
	start := time.Unix(1000, 0)
	tests := []struct {
		rate      float64
		d         time.Duration
		wantCount int
		i         int
		wantAt    time.Duration
	}{
		{rate: 100, d: 10 * time.Second, wantCount: 1000, i: 1, wantAt: 10 * time.Millisecond},
		{rate: 4000, d: 20 * time.Second, wantCount: 80000, i: 79999, wantAt: 19999750 * time.Microsecond},
		{rate: 0.5, d: 10 * time.Second, wantCount: 5, i: 3, wantAt: 6 * time.Second},
		{rate: 0, d: 10 * time.Second, wantCount: 0},
	}
	for _, tt := range tests {
		tab := gen.NewTimetable(start, tt.rate, tt.d)
		if tab.Count != tt.wantCount {
			t.Errorf("rate %v for %v: Count = %d, want %d", tt.rate, tt.d, tab.Count, tt.wantCount)
		}
		if tt.rate > 0 {
			if got := tab.At(tt.i).Sub(start); got != tt.wantAt {
				t.Errorf("rate %v: At(%d) = +%v, want +%v", tt.rate, tt.i, got, tt.wantAt)
			}
		}
	}
}

func TestAssign(t *testing.T) {
	tests := []struct {
		i, rooms, members int
		room, member      int
	}{
		{0, 3, 2, 0, 0},
		{1, 3, 2, 1, 0},
		{3, 3, 2, 0, 1},
		{6, 3, 2, 0, 0},
		{5, 1, 1000, 0, 5},
	}
	for _, tt := range tests {
		r, m := gen.Assign(tt.i, tt.rooms, tt.members)
		if r != tt.room || m != tt.member {
			t.Errorf("Assign(%d, %d, %d) = %d, %d; want %d, %d", tt.i, tt.rooms, tt.members, r, m, tt.room, tt.member)
		}
	}
	// Over rooms×members consecutive sends every member of every room sends once.
	seen := map[[2]int]int{}
	for i := range 12 {
		r, m := gen.Assign(i, 3, 4)
		seen[[2]int{r, m}]++
	}
	if len(seen) != 12 {
		t.Errorf("12 sends reached %d distinct senders, want 12", len(seen))
	}
}

func TestTimetableRunIsOpenLoop(t *testing.T) {
	tab := gen.NewTimetable(time.Now().Add(10*time.Millisecond), 1000, 100*time.Millisecond)
	var (
		mu   sync.Mutex
		sent = map[int]time.Time{}
		lags int
	)
	tab.Run(context.Background(), 4, func(_, i int, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if i == 10 {
			// A stalled send delays nothing but its own worker's next ones,
			// and every send keeps its intended time.
			time.Sleep(20 * time.Millisecond)
		}
		sent[i] = at
	}, func(int, time.Duration) {
		mu.Lock()
		lags++
		mu.Unlock()
	})
	if len(sent) != 100 || lags != 100 {
		t.Fatalf("sent %d, lag records %d; want 100 each", len(sent), lags)
	}
	for i, at := range sent {
		if !at.Equal(tab.At(i)) {
			t.Fatalf("send %d got intended time %v, want %v", i, at, tab.At(i))
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := 0
	gen.NewTimetable(time.Now().Add(time.Hour), 10, time.Second).Run(ctx, 2, func(int, int, time.Time) { n++ }, func(int, time.Duration) {})
	if n != 0 {
		t.Fatalf("a cancelled run sent %d", n)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	tests := []struct {
		p    gen.Payload
		size int
	}{
		{gen.Payload{Run: "abc", Step: 3, Intended: 1700000000123456789, Sender: 9, N: 12345}, 100},
		{gen.Payload{Run: "x", Step: 0, Intended: 1, Sender: 0, N: 0}, 10},
	}
	for _, tt := range tests {
		content := string(tt.p.AppendContent(nil, tt.size))
		if len(content) < tt.size {
			t.Errorf("content %q shorter than %d", content, tt.size)
		}
		got, ok := gen.ParseContent(content)
		if !ok || got != tt.p {
			t.Errorf("ParseContent(%q) = %+v, %v; want %+v", content, got, ok, tt.p)
		}
		frame := gen.AppendSendFrame(nil, tt.p, tt.size)
		f, err := gen.ParseFrame([]byte(`{"type":"ack","client_msg_id":"` + string(gen.AppendClientMsgID(nil, tt.p.N, tt.p.Step, tt.p.Intended)) + `"}`))
		if err != nil {
			t.Fatal(err)
		}
		n, step, intended, ok := gen.ParseClientMsgID(f.ClientMsgID)
		if !ok || n != tt.p.N || step != tt.p.Step || intended != tt.p.Intended {
			t.Errorf("client_msg_id of %s parsed as %d %d %d %v", frame, n, step, intended, ok)
		}
	}
	for _, bad := range []string{"hello", "bench|r|1|2|3", "bench|r|x|2|3|4|", "bench|r|1|2|3|y|pad"} {
		if _, ok := gen.ParseContent(bad); ok {
			t.Errorf("ParseContent(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "1.2", "a.b.c", "1.2.x"} {
		if _, _, _, ok := gen.ParseClientMsgID(bad); ok {
			t.Errorf("ParseClientMsgID(%q) accepted", bad)
		}
	}
}

func TestParseFrame(t *testing.T) {
	tests := []struct {
		name string
		data string
		want gen.Frame
	}{
		{"message fast path",
			`{"type":"message","id":"0193","seq":42,"room_id":"7","user_id":"3","nickname":"bob","content":"bench|r|1|2|3|4|xx","time_created":"t","client_msg_id":"4.1.2"}`,
			gen.Frame{Type: "message", Seq: 42, Content: "bench|r|1|2|3|4|xx", ClientMsgID: "4.1.2"}},
		{"message with escapes falls back to JSON",
			`{"type":"message","id":"1","seq":7,"room_id":"7","user_id":"3","nickname":"b","content":"say \"seq\":99","time_created":"t"}`,
			gen.Frame{Type: "message", Seq: 7, Content: `say "seq":99`}},
		{"ack", `{"type":"ack","client_msg_id":"1.2.3"}`, gen.Frame{Type: "ack", ClientMsgID: "1.2.3"}},
		{"welcome", `{"type":"welcome","room_id":"7","user_id":"3","nickname":"b","last_seq":12,"recovered":true}`,
			gen.Frame{Type: "welcome", LastSeq: 12, Recovered: true}},
		{"error", `{"type":"error","code":"rate_limited","message":"m","client_msg_id":"1.0.5"}`,
			gen.Frame{Type: "error", Code: "rate_limited", ClientMsgID: "1.0.5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := gen.ParseFrame([]byte(tt.data))
			if err != nil || got != tt.want {
				t.Fatalf("ParseFrame = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
