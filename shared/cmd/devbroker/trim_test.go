package main

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// trimFixture is a broker with a two-partition topic holding ten records
// on each partition (values "0".."9").
type trimFixture struct {
	addr  string
	stop  func()
	topic string
	cl    *kgo.Client
	adm   *kadm.Client
}

func newTrimFixture(t *testing.T, ctx context.Context, dir string, extra ...string) *trimFixture {
	t.Helper()
	addr, stop := startBroker(t, dir, extra...)
	return fillTrimFixture(t, ctx, addr, stop)
}

// fillTrimFixture creates the fixture's topic and records on the broker at
// addr.
func fillTrimFixture(t *testing.T, ctx context.Context, addr string, stop func()) *trimFixture {
	t.Helper()
	f := &trimFixture{addr: addr, stop: stop, topic: "trim-test"}
	f.connect(t)
	if _, err := f.adm.CreateTopic(ctx, 2, 1, nil, f.topic); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	for p := range int32(2) {
		for i := range 10 {
			rec := &kgo.Record{Topic: f.topic, Partition: p, Value: []byte(strconv.Itoa(i))}
			if err := f.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
				t.Fatalf("produce: %v", err)
			}
		}
	}
	return f
}

func (f *trimFixture) connect(t *testing.T) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	f.cl, f.adm = cl, kadm.NewClient(cl)
}

// commit commits, for group, offset at on each partition given.
func (f *trimFixture) commit(t *testing.T, ctx context.Context, group string, at map[int32]int64) {
	t.Helper()
	os := kadm.Offsets{}
	for p, o := range at {
		os.Add(kadm.Offset{Topic: f.topic, Partition: p, At: o, LeaderEpoch: -1})
	}
	resp, err := f.adm.CommitOffsets(ctx, group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("commit %s: %v", group, err)
	}
}

// starts returns the log start offset of partitions 0 and 1.
func (f *trimFixture) starts(t *testing.T, ctx context.Context) [2]int64 {
	t.Helper()
	l, err := f.adm.ListStartOffsets(ctx, f.topic)
	if err == nil {
		err = l.Error()
	}
	if err != nil {
		t.Fatalf("list start offsets: %v", err)
	}
	var out [2]int64
	for p := range int32(2) {
		o, ok := l.Lookup(f.topic, p)
		if !ok {
			t.Fatalf("no start offset for partition %d", p)
		}
		out[p] = o.Offset
	}
	return out
}

// first returns the value of the first record fetched from partition p.
func (f *trimFixture) first(t *testing.T, ctx context.Context, p int32) string {
	t.Helper()
	r := firstRecord(t, ctx, f.addr,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{f.topic: {p: kgo.NewOffset().AtStart()}}))
	return fmt.Sprintf("%d:%s", r.Offset, r.Value)
}

func TestTrimDeletesOnlyWhatEveryGroupCommitted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := newTrimFixture(t, ctx, t.TempDir(), "DEVBROKER_TRIM_INTERVAL", "0")

	// Nothing committed: nothing to trim.
	if n, err := trimCommitted(ctx, f.adm, 0); err != nil || n != 0 {
		t.Fatalf("trim with no commits = %d, %v; want 0, nil", n, err)
	}

	// g1 reads the topic but has committed on partition 0 only; g2 is
	// further along on both.
	f.commit(t, ctx, "g1", map[int32]int64{0: 6})
	f.commit(t, ctx, "g2", map[int32]int64{0: 8, 1: 10})

	// Within the keep window nothing goes, committed or not.
	if n, err := trimCommitted(ctx, f.adm, time.Hour); err != nil || n != 0 {
		t.Fatalf("trim with records inside the keep window = %d, %v; want 0, nil", n, err)
	}
	if got := f.starts(t, ctx); got != [2]int64{0, 0} {
		t.Fatalf("start offsets after a trim inside the keep window = %v, want [0 0]", got)
	}

	// Partition 0 goes up to the lowest commit (g1's 6); partition 1 stays
	// whole, since g1 has not committed there.
	n, err := trimCommitted(ctx, f.adm, 0)
	if err != nil || n != 6 {
		t.Fatalf("trim = %d, %v; want 6 records, nil", n, err)
	}
	if got := f.starts(t, ctx); got != [2]int64{6, 0} {
		t.Fatalf("start offsets after the trim = %v, want [6 0]", got)
	}
	if got := f.first(t, ctx, 0); got != "6:6" {
		t.Fatalf("first record of partition 0 after the trim = %s, want 6:6", got)
	}
	if got := f.first(t, ctx, 1); got != "0:0" {
		t.Fatalf("first record of partition 1 after the trim = %s, want 0:0", got)
	}

	// A second round has nothing new to do.
	if n, err := trimCommitted(ctx, f.adm, 0); err != nil || n != 0 {
		t.Fatalf("second trim = %d, %v; want 0, nil", n, err)
	}

	// Once g1 has committed on both, both partitions go up to the lowest
	// commit (8 on partition 0, g1's 4 on partition 1).
	f.commit(t, ctx, "g1", map[int32]int64{0: 10, 1: 4})
	if n, err := trimCommitted(ctx, f.adm, 0); err != nil || n != 2+4 {
		t.Fatalf("trim after g1 committed on both = %d, %v; want 6 records, nil", n, err)
	}
	if got := f.starts(t, ctx); got != [2]int64{8, 4} {
		t.Fatalf("start offsets = %v, want [8 4]", got)
	}

	// Everything committed: the last record of each partition stays.
	f.commit(t, ctx, "g1", map[int32]int64{0: 10, 1: 10})
	f.commit(t, ctx, "g2", map[int32]int64{0: 10, 1: 10})
	if n, err := trimCommitted(ctx, f.adm, 0); err != nil || n != 1+5 {
		t.Fatalf("trim with everything committed = %d, %v; want 6 records, nil", n, err)
	}
	if got := f.starts(t, ctx); got != [2]int64{9, 9} {
		t.Fatalf("start offsets with everything committed = %v, want [9 9]", got)
	}
}

func TestTrimLeavesAPartitionItCannotLookUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	defer c.Close()
	f := fillTrimFixture(t, ctx, c.ListenAddrs()[0], c.Close)
	f.commit(t, ctx, "g1", map[int32]int64{0: 6, 1: 6})

	// The broker answers the start offsets of partition 1 with an error
	// (partition 0 with its true start, 0); every other request is its own.
	var failing atomic.Bool
	failing.Store(true)
	c.ControlKey(int16(kmsg.ListOffsets), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.ListOffsetsRequest)
		if !failing.Load() || !onlyStartOffsets(req) {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.LeaderEpoch = -1
				sp.Offset = 0
				if rp.Partition == 1 {
					sp.ErrorCode = kerr.UnknownServerError.Code
					sp.Offset = -1
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})

	// Partition 0 is trimmed to the commit; partition 1, whose start could
	// not be read, is left whole, and the round does not fail.
	n, err := trimCommitted(ctx, f.adm, 0)
	if err != nil || n != 6 {
		t.Fatalf("trim with partition 1's start unreadable = %d, %v; want 6 records, nil", n, err)
	}
	failing.Store(false)
	if got := f.starts(t, ctx); got != [2]int64{6, 0} {
		t.Fatalf("start offsets = %v, want [6 0]", got)
	}
}

// onlyStartOffsets reports whether req asks for log start offsets alone.
func onlyStartOffsets(req *kmsg.ListOffsetsRequest) bool {
	for _, rt := range req.Topics {
		for _, rp := range rt.Partitions {
			if rp.Timestamp != -2 {
				return false
			}
		}
	}
	return len(req.Topics) > 0
}

func TestBrokerTrimsOnItsOwnAndKeepsTheTrimAcrossRestarts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	f := newTrimFixture(t, ctx, dir, "DEVBROKER_TRIM_INTERVAL", "50ms", "DEVBROKER_KEEP", "0s")
	f.commit(t, ctx, "workers", map[int32]int64{0: 10, 1: 3})

	// Partition 0 is committed to its end: its last record stays.
	for f.starts(t, ctx) != [2]int64{9, 3} {
		select {
		case <-ctx.Done():
			t.Fatalf("start offsets stayed %v, want [9 3]", f.starts(t, ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
	if got := f.first(t, ctx, 1); got != "3:3" {
		t.Fatalf("first record of partition 1 = %s, want 3:3", got)
	}

	// After a restart the trimmed records are still gone, the rest is
	// there, and a new record follows on from the old ones (offset 10).
	f.cl.Close()
	f.stop()
	f.addr, f.stop = startBroker(t, dir, "DEVBROKER_TRIM_INTERVAL", "0")
	f.connect(t)
	if got := f.starts(t, ctx); got != [2]int64{9, 3} {
		t.Fatalf("start offsets after a restart = %v, want [9 3]", got)
	}
	if got := f.first(t, ctx, 1); got != "3:3" {
		t.Fatalf("first record of partition 1 after a restart = %s, want 3:3", got)
	}
	res, err := f.cl.ProduceSync(ctx, &kgo.Record{Topic: f.topic, Partition: 0, Value: []byte("10")}).First()
	if err != nil {
		t.Fatalf("produce after a restart: %v", err)
	}
	if res.Offset != 10 {
		t.Fatalf("record produced after a restart got offset %d, want 10", res.Offset)
	}
}

func TestNegativeTrimSettingsAreRefused(t *testing.T) {
	for _, kv := range [][2]string{{"DEVBROKER_TRIM_INTERVAL", "-1s"}, {"DEVBROKER_KEEP", "-1m"}, {"DEVBROKER_KEEP", "soon"}} {
		env := map[string]string{"DEVBROKER_ADDR": "127.0.0.1:0", "DEVBROKER_DATA_DIR": t.TempDir(), kv[0]: kv[1]}
		err := run(context.Background(), func(k string) string { return env[k] }, &logBuffer{})
		if err == nil {
			t.Fatalf("run with %s=%s: no error", kv[0], kv[1])
		}
	}
}
