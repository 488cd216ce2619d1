// Package tracetest_test follows one message's trace end to end through the
// real binaries: it runs an OTLP/HTTP receiver of its own, starts a gateway
// and a worker exporting to it, sends one v2 message and checks that the
// spans the two binaries export form one trace: the gateway's rooms.send,
// the worker's rooms.batch linked to it (with its store and broadcast
// children), and the gateway's rooms.deliver, a child of rooms.send through
// the fan-out stream entry.
package tracetest_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"rooms/shared/testenv"
)

// waitFor bounds every wait; it is never a speed assertion.
const waitFor = 90 * time.Second

var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "rooms-tracetest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	if err := testenv.BuildBinaries(dir, nil, "rooms/gateway/cmd/gateway", "rooms/worker/cmd/worker"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// span is what the test keeps of an exported span.
type span struct {
	service, name     string
	trace, id, parent string
	links             []link
	attrs             map[string]string
}

type link struct{ trace, id string }

// receiver is a minimal OTLP/HTTP trace receiver: POST /v1/traces with a
// protobuf ExportTraceServiceRequest.
type receiver struct {
	mu    sync.Mutex
	spans []span
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "content type "+ct, http.StatusUnsupportedMediaType)
		return
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := &coltracepb.ExportTraceServiceRequest{}
	if err := proto.Unmarshal(b, req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	for _, rs := range req.ResourceSpans {
		var service string
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.Value.GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				sp := span{
					service: service, name: s.Name, trace: hex.EncodeToString(s.TraceId),
					id: hex.EncodeToString(s.SpanId), parent: hex.EncodeToString(s.ParentSpanId),
					attrs: map[string]string{},
				}
				for _, l := range s.Links {
					sp.links = append(sp.links, link{hex.EncodeToString(l.TraceId), hex.EncodeToString(l.SpanId)})
				}
				for _, a := range s.Attributes {
					sp.attrs[a.Key] = a.Value.GetStringValue()
				}
				rc.spans = append(rc.spans, sp)
			}
		}
	}
	rc.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (rc *receiver) snapshot() []span {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.spans)
}

func TestTraceOfOneMessage(t *testing.T) {
	rc := &receiver{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rc, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	db := testenv.Postgres(t)
	_, prefix := testenv.Redis(t)
	broker := testenv.Kafka(t)
	common := []string{
		"DATABASE_URL=" + db.DSN,
		"REDIS_ADDR=" + testenv.RedisAddr(),
		"REDIS_PREFIX=" + prefix,
		"KAFKA_BROKERS=" + strings.Join(broker.ListenAddrs(), ","),
		"KAFKA_TOPIC=chat.trace." + testenv.RandomID(4),
		"KAFKA_PARTITIONS=2",
		"KAFKA_GROUP=trace-" + testenv.RandomID(4),
		"JWT_SECRET=tracetest-secret-tracetest-secret-tracetest",
		"ADMIN_ADDR=127.0.0.1:0",
		"LOG_LEVEL=debug",
		"SHUTDOWN_TIMEOUT=10s",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + ln.Addr().String(),
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}
	worker := start(t, "worker", append(common, "WORKER_ID=trace-worker"), "admin listening")
	gateway := start(t, "gateway", append(common, "GATEWAY_ID=trace-gw", "HTTP_ADDR=127.0.0.1:0"), "http listening")
	base := "http://" + gateway.Addrs["http listening"]
	waitOK(t, base+"/readyz")

	token := login(t, base)
	room := createRoom(t, base, token)
	ws := dial(t, base, room, token)
	readUntil(t, ws, "welcome")
	cmid := "trace-" + testenv.RandomID(6)
	if err := ws.WriteJSON(map[string]string{"type": "send", "content": "hello", "client_msg_id": cmid}); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ws, "ack", "message")

	var send, batch, deliver *span
	var children map[string]bool
	deadline := time.Now().Add(waitFor)
	for {
		spans := rc.snapshot()
		send, batch, deliver, children = nil, nil, nil, map[string]bool{}
		for i := range spans {
			s := &spans[i]
			if s.name == "rooms.send" && s.attrs["rooms.client_msg_id"] == cmid {
				send = s
			}
		}
		if send != nil {
			for i := range spans {
				s := &spans[i]
				switch {
				case s.name == "rooms.batch" && slices.Contains(s.links, link{send.trace, send.id}):
					batch = s
				case s.name == "rooms.deliver" && s.trace == send.trace:
					deliver = s
				}
			}
		}
		if batch != nil {
			for _, s := range spans {
				if s.parent == batch.id && s.trace == batch.trace {
					children[s.name] = true
				}
			}
		}
		if send != nil && batch != nil && deliver != nil && children["store"] && children["broadcast"] {
			break
		}
		if time.Now().After(deadline) {
			var names []string
			for _, s := range spans {
				names = append(names, s.service+"/"+s.name)
			}
			t.Fatalf("within %v: rooms.send %v, linked rooms.batch %v, rooms.deliver in its trace %v, batch children %v; all spans: %v",
				waitFor, send != nil, batch != nil, deliver != nil, children, names)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if send.service != "gateway" || batch.service != "worker" || deliver.service != "gateway" {
		t.Errorf("services: send %q, batch %q, deliver %q", send.service, batch.service, deliver.service)
	}
	if send.attrs["rooms.room_id"] != room {
		t.Errorf("rooms.send room id %q, want %q", send.attrs["rooms.room_id"], room)
	}
	// rooms.deliver's parent is rooms.send, carried through the Kafka
	// record and the fan-out stream entry.
	if deliver.parent != send.id {
		t.Errorf("rooms.deliver parent %s, want the rooms.send span %s", deliver.parent, send.id)
	}
	t.Logf("trace %s: rooms.send %s → rooms.batch %s (trace %s, linked) → rooms.deliver %s", send.trace, send.id, batch.id, batch.trace, deliver.id)

	// The send path and batch log lines carry the trace id.
	if !strings.Contains(worker.Out.String(), `"trace_id":"`+batch.trace+`"`) {
		t.Errorf("no worker log line with the batch's trace_id %s", batch.trace)
	}
}

// start runs the binary name (built by TestMain) with env; see
// testenv.StartBinary.
func start(t *testing.T, name string, env []string, want ...string) *testenv.Proc {
	t.Helper()
	return testenv.StartBinary(t, filepath.Join(binDir, name), env, waitFor, want...)
}

func waitOK(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not 200 within %v", url, waitFor)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func postJSON(t *testing.T, url, token string, body, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, raw)
	}
	if resp.Header.Get("X-Request-ID") == "" {
		t.Errorf("POST %s: no X-Request-ID in the answer", url)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("POST %s: %q: %v", url, raw, err)
		}
	}
}

func login(t *testing.T, base string) string {
	t.Helper()
	creds := map[string]string{"nickname": "ops" + testenv.RandomID(5), "password": "password-ops-test"}
	postJSON(t, base+"/api/user/register", "", creds, nil)
	var s struct {
		AccessToken string `json:"access_token"`
	}
	postJSON(t, base+"/api/user/login", "", creds, &s)
	return s.AccessToken
}

func createRoom(t *testing.T, base, token string) string {
	t.Helper()
	var r struct {
		ID string `json:"id"`
	}
	postJSON(t, base+"/api/chat/rooms", token, map[string]string{"name": "ops " + testenv.RandomID(3)}, &r)
	return r.ID
}

func dial(t *testing.T, base, room, token string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"rooms.v2"}, HandshakeTimeout: 30 * time.Second}
	h := http.Header{"Authorization": {"Bearer " + token}}
	c, resp, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/api/chat/rooms/"+room, h)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readUntil(t *testing.T, c *websocket.Conn, types ...string) {
	t.Helper()
	seen := map[string]bool{}
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	for len(seen) < len(types) {
		var f struct{ Type string }
		if err := c.ReadJSON(&f); err != nil {
			t.Fatalf("waiting for %v (seen %v): %v", types, seen, err)
		}
		if slices.Contains(types, f.Type) {
			seen[f.Type] = true
		}
	}
}
