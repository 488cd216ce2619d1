package main

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"rooms/shared/testenv"
)

func TestSplitAddr(t *testing.T) {
	tests := []struct {
		addr     string
		wantHost string
		wantPort int
		wantErr  bool
	}{
		{addr: "127.0.0.1:9092", wantHost: "127.0.0.1", wantPort: 9092},
		{addr: ":9093", wantHost: "127.0.0.1", wantPort: 9093},
		{addr: "localhost:0", wantHost: "localhost", wantPort: 0},
		{addr: "[::1]:9092", wantHost: "::1", wantPort: 9092},
		{addr: "127.0.0.1", wantErr: true},
		{addr: "127.0.0.1:kafka", wantErr: true},
		{addr: "127.0.0.1:70000", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			host, port, err := splitAddr(tt.addr)
			if (err != nil) != tt.wantErr {
				t.Fatalf("splitAddr(%q) error = %v, want error %v", tt.addr, err, tt.wantErr)
			}
			if err == nil && (host != tt.wantHost || port != tt.wantPort) {
				t.Fatalf("splitAddr(%q) = %q, %d; want %q, %d", tt.addr, host, port, tt.wantHost, tt.wantPort)
			}
		})
	}
}

// logBuffer collects run's JSON log lines; run writes from its goroutine
// while the test reads.
type logBuffer struct{ testenv.Output }

func (b *logBuffer) field(msg, key string) string {
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == msg {
			s, _ := line[key].(string)
			return s
		}
	}
	return ""
}

// startBroker runs the program on a free loopback port with its data in dir
// and the settings in extra, and returns the address it listens on and a
// function that stops it (as SIGTERM would) and waits until run has
// returned.
func startBroker(t *testing.T, dir string, extra ...string) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	env := map[string]string{"DEVBROKER_ADDR": "127.0.0.1:0", "DEVBROKER_DATA_DIR": dir}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	logs := &logBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return env[k] }, logs) }()

	var addr string
	deadline := time.Now().Add(30 * time.Second)
	for addr == "" {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("run returned before listening: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("broker did not log its address; logs:\n%s", logs)
		}
		addr = logs.field("broker listening", "addr")
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}
	t.Cleanup(stop)
	return addr, stop
}

func TestRecordSurvivesRestart(t *testing.T) {
	const topic = "devbroker-test"
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	addr, stop := startBroker(t, dir)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("listen address %q is not on loopback", addr)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatalf("client: %v", err)
	}

	// Like a production cluster, the broker does not create topics on demand.
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	meta.Topics = append(meta.Topics, mt)
	meta.AllowAutoTopicCreation = true
	metaResp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	if got := kerr.ErrorForCode(metaResp.Topics[0].ErrorCode); got != kerr.UnknownTopicOrPartition {
		t.Fatalf("metadata for a missing topic: error %v, want %v (no auto-creation)", got, kerr.UnknownTopicOrPartition)
	}

	create := kmsg.NewPtrCreateTopicsRequest()
	ct := kmsg.NewCreateTopicsRequestTopic()
	ct.Topic, ct.NumPartitions, ct.ReplicationFactor = topic, 2, 1
	create.Topics = append(create.Topics, ct)
	createResp, err := create.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("create topic: %v", err)
	}
	if err := kerr.ErrorForCode(createResp.Topics[0].ErrorCode); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	rec := &kgo.Record{Topic: topic, Key: []byte("7"), Value: []byte(`{"content":"hi"}`)}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	cl.Close()
	stop()

	addr, _ = startBroker(t, dir)
	got := firstRecord(t, ctx, addr, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if string(got.Key) != "7" || string(got.Value) != `{"content":"hi"}` || got.Offset != 0 {
		t.Fatalf("after restart got key %q value %q offset %d; want the record produced before", got.Key, got.Value, got.Offset)
	}
}

// firstRecord returns the first record a consumer of the broker at addr,
// set up by opts, fetches; fetch errors are logged and retried until ctx
// ends.
func firstRecord(t *testing.T, ctx context.Context, addr string, opts ...kgo.Opt) *kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr)}, opts...)...)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("no record fetched: %v", err)
		}
		for _, fe := range fetches.Errors() {
			t.Logf("fetch %s/%d: %v", fe.Topic, fe.Partition, fe.Err)
		}
		if recs := fetches.Records(); len(recs) > 0 {
			return recs[0]
		}
	}
}
