package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"rooms/shared/message"
	"rooms/shared/testenv"
	"rooms/worker/internal/app"
)

// waitFor is the generous deadline of every wait: it bounds a hung test,
// it is never a performance assertion.
const waitFor = 3 * time.Minute

// env is one test's services, users, rooms and the records it produced.
type env struct {
	t       *testing.T
	db      *testenv.Database
	rdb     *redis.Client
	prefix  string
	brokers string
	topic   string
	users   []int64
	rooms   []int64

	mu       sync.Mutex
	produced map[int64][]string // room → message ids in produce order
	paused   atomic.Int64       // "partition paused" log lines seen
	failed   atomic.Int64       // "store batch failed" log lines seen
}

func newEnv(t *testing.T, rooms int) *env {
	t.Helper()
	return newEnvOn(t, testenv.Postgres(t), rooms)
}

func newEnvOn(t *testing.T, db *testenv.Database, rooms int) *env {
	t.Helper()
	e := &env{t: t, produced: map[int64][]string{}}
	e.db = db
	e.rdb, e.prefix = testenv.Redis(t)
	e.brokers = testenv.Kafka(t).ListenAddrs()[0]
	e.topic = "chat.test." + testenv.RandomID(4)
	ctx := context.Background()
	for i := range 3 {
		var id int64
		if err := e.db.Pool.QueryRow(ctx, `INSERT INTO users (nickname, password_hash) VALUES ($1, 'x') RETURNING id`,
			fmt.Sprintf("user%d", i)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		e.users = append(e.users, id)
	}
	for i := range rooms {
		var id int64
		if err := e.db.Pool.QueryRow(ctx, `INSERT INTO rooms (name) VALUES ($1) RETURNING id`,
			fmt.Sprintf("room%d", i)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		e.rooms = append(e.rooms, id)
	}
	return e
}

func (e *env) getenv(workerID string) func(string) string {
	vars := map[string]string{
		"DATABASE_URL":     e.db.DSN,
		"PG_MAX_CONNS":     "8",
		"REDIS_ADDR":       testenv.RedisAddr(),
		"REDIS_PREFIX":     e.prefix,
		"KAFKA_BROKERS":    e.brokers,
		"KAFKA_TOPIC":      e.topic,
		"KAFKA_PARTITIONS": "4",
		"KAFKA_GROUP":      "workers-" + e.topic,
		"WORKER_ID":        workerID,
		"BATCH_SIZE":       "20",
		"BATCH_LINGER":     "5ms",
		"SHUTDOWN_TIMEOUT": "60s",
		"LOG_LEVEL":        "info",
	}
	return func(k string) string { return vars[k] }
}

// worker is a running app.Run.
type worker struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs a worker until stop (or the end of the test).
func (e *env) start(id string) *worker {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{cancel: cancel, done: make(chan error, 1)}
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, `"partition paused"`) {
				e.paused.Add(1)
			}
			if strings.Contains(line, `"store batch failed"`) {
				if e.failed.Add(1) > 3 {
					continue // a database outage logs every retry
				}
			}
			if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, `"level":"WARN"`) ||
				strings.Contains(line, "partitions") || strings.Contains(line, "stopped") {
				e.t.Log(id, line)
			}
		}
	}()
	go func() {
		err := app.Run(ctx, e.getenv(id), pw)
		pw.Close()
		w.done <- err
	}()
	e.t.Cleanup(func() { e.stop(w) })
	return w
}

// stop cancels a worker and waits for it to return.
func (e *env) stop(w *worker) {
	e.t.Helper()
	if w.done == nil {
		return
	}
	w.cancel()
	select {
	case err := <-w.done:
		if err != nil {
			e.t.Errorf("worker: %v", err)
		}
	case <-time.After(waitFor):
		e.t.Errorf("worker did not stop")
	}
	w.done = nil
}

// waitTopic waits until the topic exists (the worker creates it).
func (e *env) waitTopic() {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	e.eventually("topic created", func() bool {
		td, err := adm.ListTopics(context.Background(), e.topic)
		return err == nil && td.Has(e.topic) && td[e.topic].Err == nil && len(td[e.topic].Partitions) == 4
	})
}

// createTopic creates the topic before any worker runs.
func (e *env) createTopic() {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 4, 1, nil, e.topic); err != nil {
		e.t.Fatal(err)
	}
}

// produce sends n messages spread over the rooms and users, with a
// client_msg_id on every other one.
func (e *env) produce(n int) {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers), kgo.DefaultProduceTopic(e.topic),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	e.mu.Lock()
	for i := range n {
		room := e.rooms[i%len(e.rooms)]
		user := e.users[i%len(e.users)]
		m := message.Message{
			ID:          fmt.Sprintf("0193b000-0000-7000-8000-%012x", testCounter.Add(1)),
			RoomID:      strconv.FormatInt(room, 10),
			UserID:      strconv.FormatInt(user, 10),
			Nickname:    fmt.Sprintf("user%d", user),
			Content:     fmt.Sprintf("message %d", i),
			TimeCreated: message.FormatTime(time.Now()),
		}
		if i%2 == 0 {
			m.ClientMsgID = "c-" + m.ID
		}
		v, _ := json.Marshal(m)
		recs = append(recs, &kgo.Record{Key: []byte(m.RoomID), Value: v})
		e.produced[room] = append(e.produced[room], m.ID)
	}
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		e.t.Fatalf("produce: %v", err)
	}
}

var testCounter atomic.Int64

func (e *env) total() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ids := range e.produced {
		n += len(ids)
	}
	return n
}

func (e *env) stored() int {
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM messages`).Scan(&n); err != nil {
		return -1 // a database that is being restarted
	}
	return n
}

func (e *env) eventually(what string, ok func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(waitFor)
	for !ok() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkPostgres checks every produced message is stored exactly once and
// each room's seqs are 1..N with last_seq N.
func (e *env) checkPostgres() {
	e.t.Helper()
	ctx := context.Background()
	e.mu.Lock()
	defer e.mu.Unlock()
	for room, ids := range e.produced {
		rows, err := e.db.Pool.Query(ctx, `SELECT seq, id::text FROM messages WHERE room_id = $1 ORDER BY seq`, room)
		if err != nil {
			e.t.Fatal(err)
		}
		got := map[string]bool{}
		var seq int64
		var id string
		i := int64(0)
		for rows.Next() {
			if err := rows.Scan(&seq, &id); err != nil {
				e.t.Fatal(err)
			}
			i++
			if seq != i {
				e.t.Fatalf("room %d: seq %d at position %d", room, seq, i)
			}
			got[id] = true
		}
		rows.Close()
		if int(i) != len(ids) {
			e.t.Fatalf("room %d: %d rows, produced %d", room, i, len(ids))
		}
		for _, id := range ids {
			if !got[id] {
				e.t.Fatalf("room %d: message %s not stored", room, id)
			}
		}
		var last int64
		if err := e.db.Pool.QueryRow(ctx, `SELECT last_seq FROM rooms WHERE id = $1`, room).Scan(&last); err != nil {
			e.t.Fatal(err)
		}
		if last != int64(len(ids)) {
			e.t.Fatalf("room %d: last_seq %d, want %d", room, last, len(ids))
		}
	}
}

// streamSeqs returns each room's seqs in fan-out stream order.
func (e *env) streamSeqs() map[int64][]int64 {
	e.t.Helper()
	out := map[int64][]int64{}
	for _, key := range message.FanoutStreams(e.prefix) {
		entries, err := e.rdb.XRange(context.Background(), key, "-", "+").Result()
		if err != nil {
			e.t.Fatal(err)
		}
		for _, en := range entries {
			if en.Values[message.FieldKind] != message.KindMessage {
				e.t.Fatalf("entry kind %v", en.Values[message.FieldKind])
			}
			var m message.Message
			if err := json.Unmarshal([]byte(en.Values[message.FieldData].(string)), &m); err != nil {
				e.t.Fatal(err)
			}
			room, _ := strconv.ParseInt(m.RoomID, 10, 64)
			if message.FanoutStream(e.prefix, room) != key {
				e.t.Fatalf("room %d in stream %s", room, key)
			}
			out[room] = append(out[room], m.Seq)
		}
	}
	return out
}

// checkStreams checks every room's stream holds each seq 1..N. With exact,
// each appears once in ascending order; otherwise re-broadcast repeats are
// allowed, and what a reader keeps (entries newer than the last it saw) must
// be exactly 1..N in order.
func (e *env) checkStreams(exact bool) {
	e.t.Helper()
	seqs := e.streamSeqs()
	e.mu.Lock()
	defer e.mu.Unlock()
	for room, ids := range e.produced {
		got := seqs[room]
		if exact && len(got) != len(ids) {
			e.t.Fatalf("room %d: %d stream entries, want %d", room, len(got), len(ids))
		}
		var kept []int64
		last := int64(0)
		for _, s := range got {
			if s > last {
				kept = append(kept, s)
				last = s
			}
		}
		if len(kept) != len(ids) {
			e.t.Fatalf("room %d: stream keeps %d seqs, want %d", room, len(kept), len(ids))
		}
		for i, s := range kept {
			if s != int64(i+1) {
				e.t.Fatalf("room %d: seq %d at position %d", room, s, i+1)
			}
		}
	}
}

// committed is the sum of the group's committed offsets.
func (e *env) committed() int64 {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).FetchOffsets(context.Background(), "workers-"+e.topic)
	if err != nil {
		e.t.Fatal(err)
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At > 0 {
			sum += o.At
		}
	})
	return sum
}

func TestPipeline(t *testing.T) {
	e := newEnv(t, 10)
	w := e.start("w1")
	e.waitTopic()
	e.produce(1500)
	e.eventually("every message stored", func() bool { return e.stored() == e.total() })
	// The stream is appended before the offsets are stored: wait for them.
	e.eventually("offsets committed", func() bool { return e.committed() == int64(e.total()) })
	e.checkPostgres()
	e.checkStreams(true)
	e.produce(300)
	e.eventually("second round stored", func() bool { return e.stored() == e.total() })
	e.stop(w)
	if got := e.committed(); got != int64(e.total()) {
		t.Fatalf("committed %d after shutdown, want %d", got, e.total())
	}
	e.checkPostgres()
	e.checkStreams(true)
	t.Logf("partition pauses: %d", e.paused.Load())
}

func TestRestartResumesFromCommittedOffsets(t *testing.T) {
	e := newEnv(t, 8)
	e.createTopic()
	e.produce(2000)
	w := e.start("w1")
	e.eventually("some messages stored", func() bool { return e.stored() >= 300 })
	e.stop(w)
	// A clean stop finishes the in-flight batches and commits their
	// offsets: every stored record is committed, no more.
	stored := e.stored()
	if got := e.committed(); got != int64(stored) {
		t.Fatalf("committed %d after a clean stop, stored %d", got, stored)
	}
	if stored == e.total() {
		t.Log("the first run stored everything; the restart only checks idempotence")
	}
	e.start("w1")
	e.produce(200)
	e.eventually("every message stored", func() bool { return e.stored() == e.total() })
	e.eventually("offsets committed", func() bool { return e.committed() == int64(e.total()) })
	e.checkPostgres()
	e.checkStreams(false)
}

func TestRebalanceHandsOverCleanly(t *testing.T) {
	e := newEnv(t, 12)
	e.createTopic()
	e.produce(1500)
	w1 := e.start("w1")
	e.eventually("first messages stored", func() bool { return e.stored() >= 200 })
	w2 := e.start("w2")
	e.produce(1000)
	e.eventually("more messages stored", func() bool { return e.stored() >= 1200 })
	e.stop(w1) // mid-stream: w2 takes every partition over
	e.produce(1000)
	e.eventually("every message stored", func() bool { return e.stored() == e.total() })
	e.eventually("offsets committed", func() bool { return e.committed() == int64(e.total()) })
	e.stop(w2)
	e.checkPostgres()
	e.checkStreams(false)
}
