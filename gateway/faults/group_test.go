//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"hash/crc32"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"rooms/shared/testenv"
)

// TestFaultRebalanceUnderLoad changes the consumer group three times while
// messages flow: a worker is added, one is stopped (SIGTERM) and one is
// killed (SIGKILL).
func TestFaultRebalanceUnderLoad(t *testing.T) {
	r := record(t)
	s := newStack(t, stackOpts{})
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(150, 200*time.Millisecond, 20*time.Second, 5*time.Minute)
	time.Sleep(3 * time.Second)
	third := s.addWorker()
	third.Start(t)
	testenv.WaitFor(t, "worker-3 assigned", time.Minute, third.Exited(), func() bool { return third.LogCount("partitions assigned") > 0 })
	time.Sleep(3 * time.Second)
	if err := s.workers[0].Stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("worker-1 exit after SIGTERM: %v", err)
	}
	time.Sleep(3 * time.Second)
	_ = s.workers[1].Stop(t, syscall.SIGKILL)
	killed := time.Now()
	w.verify(t, r, 4*time.Minute, "kill", killed)
	r.measure("worker3_assignments", float64(third.LogCount("partitions assigned")))
}

// TestFaultFirstStartWithBacklog sends while no worker runs (the messages
// are acked: they are in the log), then starts the workers on the backlog.
func TestFaultFirstStartWithBacklog(t *testing.T) {
	r := record(t)
	s := newStack(t, stackOpts{noWorkers: true})
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(100, 5*time.Millisecond, 20*time.Second, 3*time.Minute)
	w.swg.Wait()
	if n := len(s.storedRows(t)); n != 0 {
		t.Fatalf("%d messages stored without a worker", n)
	}
	backlog := 0
	for _, c := range w.senders {
		for _, o := range c.history() {
			if o.Acked {
				backlog++
			}
		}
	}
	started := time.Now()
	s.startWorkers()
	eventually(t, "the backlog stored", 3*time.Minute, func() bool { return len(s.storedRows(t)) >= backlog })
	r.recovery("start_to_backlog_stored", time.Since(started))
	r.measure("backlog", float64(backlog))
	t.Logf("backlog of %d acked messages stored %.2fs after the workers started", backlog, time.Since(started).Seconds())
	w.verify(t, r, 3*time.Minute, "workers_start", started)
}

// TestFaultPoisonRecord writes records that can never be stored into a
// room's partition between its messages: they end in dead_letters and the
// partition keeps moving.
func TestFaultPoisonRecord(t *testing.T) {
	r := record(t)
	s := newStack(t, stackOpts{})
	w := newWorkload(t, s, workloadOpts{rooms: 4, senders: 1, readers: 1})
	w.run(60, 50*time.Millisecond, 20*time.Second, 3*time.Minute)
	time.Sleep(time.Second)
	room := w.rooms[0]
	good := map[string]string{
		"id": "0193a0b0-0000-7000-8000-000000000001", "room_id": room, "user_id": w.senders[0].u.ID,
		"nickname": "poison", "content": "x", "time_created": "2026-11-26T14:00:00.123456Z", "client_msg_id": "poison",
	}
	bad := func(change func(m map[string]string)) []byte {
		m := map[string]string{}
		for k, v := range good {
			m[k] = v
		}
		change(m)
		b, _ := json.Marshal(m)
		return b
	}
	poisons := [][]byte{
		[]byte("not json at all"),
		bad(func(m map[string]string) { m["id"] = "not-a-uuid" }),
		bad(func(m map[string]string) { m["user_id"] = "999999999" }),
		bad(func(m map[string]string) { m["content"] = strings.Repeat("x", 5000) }),
	}
	// The gateways' librdkafka producer picks the partition with CRC32 of
	// the key ("consistent_random"); the poison goes where the room's
	// messages go.
	partition := int32(crc32.ChecksumIEEE([]byte(room)) % 4)
	kc, err := kgo.NewClient(kgo.SeedBrokers(s.brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	offsets := map[int64]bool{}
	for _, v := range poisons {
		rec := &kgo.Record{Topic: s.topic, Partition: partition, Key: []byte(room), Value: v}
		if err := kc.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
			t.Fatalf("produce poison: %v", err)
		}
		offsets[rec.Offset] = true
		time.Sleep(300 * time.Millisecond)
	}
	w.finish(t, 3*time.Minute)
	w.check(t, r)
	s.waitCommitted(t, time.Minute)
	s.checkOffsets(t)
	dead := s.deadLetters(t)
	for off := range offsets {
		if !dead[[2]int64{int64(partition), off}] {
			t.Fatalf("poison at partition %d offset %d is not in dead_letters (%v)", partition, off, dead)
		}
	}
	if len(dead) != len(poisons) {
		t.Fatalf("%d dead letters, want %d", len(dead), len(poisons))
	}
	// The room's messages after the poison were stored: the partition moved on.
	id, _ := strconv.ParseInt(room, 10, 64)
	var after int
	if err := s.db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM messages WHERE room_id = $1 AND time_created > now() - interval '1 hour' AND client_msg_id LIKE '%-1000000'`, id).Scan(&after); err != nil || after != 1 {
		t.Fatalf("the room's fence (sent after the poison) is not stored: %d %v", after, err)
	}
	t.Logf("%d poison records in partition %d dead-lettered; the partition kept moving", len(poisons), partition)
}
