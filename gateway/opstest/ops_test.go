// Package opstest_test checks the operations side of the real binaries: it
// starts a gateway and a worker binary with their admin listeners on spare
// ports, drives one message through the whole pipeline, and checks that
// /metrics, /healthz and /debug/pprof answer, that the metrics moved, and
// that every metric the Grafana dashboard (config/grafana/dashboards) and
// the Prometheus alert rules (config/prometheus/alerts.yml) reference is
// exported by one of the two binaries.
package opstest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"gopkg.in/yaml.v3"

	"rooms/shared/testenv"
)

// root is the repository root, seen from this package's folder.
const root = "../.."

// waitFor bounds every wait; it is never a speed assertion.
const waitFor = 90 * time.Second

var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "rooms-opstest-")
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

// start runs the binary name (built by TestMain) with env; see
// testenv.StartBinary.
func start(t *testing.T, name string, env []string, want ...string) *testenv.Proc {
	t.Helper()
	return testenv.StartBinary(t, filepath.Join(binDir, name), env, waitFor, want...)
}

func TestMetricsOfRunningBinaries(t *testing.T) {
	db := testenv.Postgres(t)
	_, prefix := testenv.Redis(t)
	broker := testenv.Kafka(t)
	common := []string{
		"DATABASE_URL=" + db.DSN,
		"REDIS_ADDR=" + testenv.RedisAddr(),
		"REDIS_PREFIX=" + prefix,
		"KAFKA_BROKERS=" + strings.Join(broker.ListenAddrs(), ","),
		"KAFKA_TOPIC=chat.ops." + testenv.RandomID(4),
		"KAFKA_PARTITIONS=2",
		"KAFKA_GROUP=ops-" + testenv.RandomID(4),
		"JWT_SECRET=opstest-secret-opstest-secret-opstest-secret",
		"ADMIN_ADDR=127.0.0.1:0",
		"LOG_LEVEL=info",
		"SHUTDOWN_TIMEOUT=10s",
	}
	worker := start(t, "worker", append(common, "WORKER_ID=ops-worker"), "admin listening")
	gateway := start(t, "gateway", append(common, "GATEWAY_ID=ops-gw", "HTTP_ADDR=127.0.0.1:0"),
		"admin listening", "http listening")
	base := "http://" + gateway.Addrs["http listening"]
	gwAdmin := "http://" + gateway.Addrs["admin listening"]
	wkAdmin := "http://" + worker.Addrs["admin listening"]
	waitOK(t, base+"/readyz")

	for _, u := range []string{gwAdmin, wkAdmin} {
		for _, path := range []string{"/healthz", "/debug/pprof/", "/debug/pprof/goroutine?debug=1"} {
			if code, _ := get(t, u+path); code != http.StatusOK {
				t.Errorf("GET %s%s: %d, want 200", u, path, code)
			}
		}
	}

	// One message through the pipeline: REST, WebSocket send, ack, fan-out.
	token := login(t, base)
	room := createRoom(t, base, token)
	ws := dial(t, base, room, token)
	readUntil(t, ws, "welcome")
	if err := ws.WriteJSON(map[string]string{"type": "send", "content": "hello", "client_msg_id": "ops-1"}); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ws, "ack", "message")
	// Scraped with the socket open (the gauge counts it), after the
	// frame was written (the delivery latency is observed just after).
	gw := scrapeUntil(t, gwAdmin, map[string]func(float64) bool{
		"rooms_gateway_messages_accepted_total":                                               atLeast1,
		"rooms_gateway_messages_acked_total":                                                  atLeast1,
		"rooms_gateway_ack_latency_seconds_count":                                             atLeast1,
		"rooms_gateway_delivery_latency_seconds_count":                                        atLeast1,
		`rooms_gateway_ws_connections{protocol="v2"}`:                                         func(v float64) bool { return v == 1 },
		"rooms_gateway_ws_frames_received_total":                                              atLeast1,
		"rooms_gateway_ws_frames_sent_total":                                                  atLeast1,
		`rooms_gateway_fanout_entries_total{kind="message"}`:                                  atLeast1,
		"rooms_gateway_fanout_read_lag_seconds_count":                                         atLeast1,
		`rooms_gateway_http_requests_total{code="2xx",method="POST",route="/api/user/login"}`: atLeast1,
		"go_goroutines": atLeast1,
	})
	wk := scrapeUntil(t, wkAdmin, map[string]func(float64) bool{
		"rooms_worker_records_consumed_total":  atLeast1,
		"rooms_worker_messages_stored_total":   atLeast1,
		"rooms_worker_batch_size_count":        atLeast1,
		"rooms_worker_store_seconds_count":     atLeast1,
		"rooms_worker_pg_commit_seconds_count": atLeast1,
		"rooms_worker_broadcast_seconds_count": atLeast1,
		"rooms_worker_dead_letters_total":      func(v float64) bool { return v == 0 },
		"rooms_worker_stepped_aside":           func(v float64) bool { return v == 0 },
		"process_resident_memory_bytes":        atLeast1,
	})
	// The lag is sampled every second by the poll loop.
	for deadline := time.Now().Add(waitFor); ; time.Sleep(200 * time.Millisecond) {
		lag := map[string]float64{}
		for k, v := range wk {
			if strings.HasPrefix(k, "rooms_worker_consumer_lag{") {
				lag[k] = v
			}
		}
		if len(lag) > 0 {
			t.Logf("worker lag: %v", lag)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker exports no rooms_worker_consumer_lag series within %v", waitFor)
		}
		wk = scrape(t, wkAdmin)
	}

	// More messages: the counters and histograms move with them.
	const more = 20
	for i := range more {
		if err := ws.WriteJSON(map[string]string{"type": "send", "content": "more", "client_msg_id": fmt.Sprintf("ops-more-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	grew := func(before float64) func(float64) bool {
		return func(v float64) bool { return v >= before+more }
	}
	scrapeUntil(t, gwAdmin, map[string]func(float64) bool{
		"rooms_gateway_messages_acked_total":           grew(gw["rooms_gateway_messages_acked_total"]),
		"rooms_gateway_delivery_latency_seconds_count": grew(gw["rooms_gateway_delivery_latency_seconds_count"]),
		"rooms_gateway_ws_frames_received_total":       grew(gw["rooms_gateway_ws_frames_received_total"]),
	})
	scrapeUntil(t, wkAdmin, map[string]func(float64) bool{
		"rooms_worker_messages_stored_total":  grew(wk["rooms_worker_messages_stored_total"]),
		"rooms_worker_records_consumed_total": grew(wk["rooms_worker_records_consumed_total"]),
	})

	exported := map[string]bool{}
	for _, s := range []map[string]float64{gw, wk} {
		for k := range s {
			exported[seriesName(k)] = true
		}
	}
	// up is made by Prometheus itself for every target.
	exported["up"] = true

	refs := map[string][]string{} // metric → files
	for _, f := range []string{"config/grafana/dashboards/rooms.json", "config/prometheus/alerts.yml"} {
		exprs := readExprs(t, f)
		if len(exprs) == 0 {
			t.Fatalf("%s has no expressions", f)
		}
		for _, e := range exprs {
			for _, m := range metricNames(e) {
				refs[m] = append(refs[m], f)
			}
		}
	}
	var names []string
	for m := range refs {
		names = append(names, m)
	}
	sort.Strings(names)
	for _, m := range names {
		if !exported[m] {
			t.Errorf("%s (referenced in %s) is not exported by the gateway or the worker", m, strings.Join(slices.Compact(refs[m]), ", "))
		}
	}
	t.Logf("%d metrics referenced by the dashboard and alert rules, all exported", len(names))

	// Our metrics follow the conventions: rooms_<binary>_ prefix, counters
	// end in _total, no user, room or connection labels.
	for name := range exported {
		if !strings.HasPrefix(name, "rooms_") {
			continue
		}
		if !strings.HasPrefix(name, "rooms_gateway_") && !strings.HasPrefix(name, "rooms_worker_") {
			t.Errorf("metric %s: want the prefix rooms_gateway_ or rooms_worker_", name)
		}
	}
	for _, s := range []map[string]float64{gw, wk} {
		for k := range s {
			for _, l := range []string{"user", "user_id", "room", "room_id", "conn_id", "nickname"} {
				if strings.Contains(k, "{"+l+"=") || strings.Contains(k, ","+l+"=") {
					t.Errorf("series %s has a high-cardinality label %s", k, l)
				}
			}
		}
	}
}

func atLeast1(v float64) bool { return v >= 1 }

// seriesName is the metric name of an exposition series key.
func seriesName(series string) string {
	if i := strings.IndexByte(series, '{'); i >= 0 {
		return series[:i]
	}
	return series
}

// scrape reads /metrics into series key (name{labels} as exposed, labels
// sorted by client_golang) → value.
func scrape(t *testing.T, admin string) map[string]float64 {
	t.Helper()
	code, body := get(t, admin+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d", admin, code)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad exposition line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad value in %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// scrapeUntil scrapes until every want holds (metrics of asynchronous
// steps, like the worker's lag, may trail the client's view), then returns
// the last scrape.
func scrapeUntil(t *testing.T, admin string, want map[string]func(float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		s := scrape(t, admin)
		var bad []string
		for k, ok := range want {
			v, found := s[k]
			if !found || !ok(v) {
				bad = append(bad, fmt.Sprintf("%s = %v (found %v)", k, v, found))
			}
		}
		if len(bad) == 0 {
			return s
		}
		if time.Now().After(deadline) {
			sort.Strings(bad)
			t.Fatalf("%s/metrics after %v:\n  %s", admin, waitFor, strings.Join(bad, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readExprs returns the PromQL expressions of a dashboard (every "expr",
// and the "query"/"definition" of template variables) or of an alert rules
// file (every rule's expr).
func readExprs(t *testing.T, rel string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if strings.HasSuffix(rel, ".json") {
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
	} else {
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
	}
	var out []string
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				walk(k, c)
			}
		case []any:
			for _, c := range v {
				walk(key, c)
			}
		case string:
			if key == "expr" || key == "query" || key == "definition" {
				out = append(out, v)
			}
		}
	}
	walk("", doc)
	return out
}

var (
	// quoted and braces remove label values and matchers, which may look
	// like names; metricRe then finds the names of our metrics and of the
	// Go and process collectors, and up.
	quoted   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	braces   = regexp.MustCompile(`\{[^}]*\}`)
	metricRe = regexp.MustCompile(`\b(?:rooms|go|process)_[a-zA-Z0-9_:]*|\bup\b`)
)

// metricNames lists the metric names an expression references.
func metricNames(expr string) []string {
	e := quoted.ReplaceAllString(expr, `""`)
	e = braces.ReplaceAllString(e, "{}")
	return metricRe.FindAllString(e, -1)
}

func TestMetricNamesExtraction(t *testing.T) {
	got := metricNames(`histogram_quantile(0.99, sum by (le) (rate(rooms_gateway_ack_latency_seconds_bucket{instance=~"$instance", job="go_x"}[5m]))) / up{job="gateway"} and go_goroutines`)
	want := []string{"rooms_gateway_ack_latency_seconds_bucket", "up", "go_goroutines"}
	if !slices.Equal(got, want) {
		t.Errorf("metricNames = %v, want %v", got, want)
	}
}

// TestAlertRulesShape checks every alert rule has what Prometheus and
// the on-call need.
func TestAlertRulesShape(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "config/prometheus/alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %q of group %q: want alert, expr, labels.severity and annotations.summary", r.Alert, g.Name)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
				}
			}
		}
	}
	for _, want := range []string{"RoomsConsumerLagGrowing", "RoomsDeadLetters", "RoomsSendErrorRate", "RoomsProducerFatal", "RoomsNoFanoutProgress"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alert %s is missing", want)
		}
	}
}

// TestDashboardShape checks the dashboard's panels and that Grafana's
// provisioning finds it where compose mounts it.
func TestDashboardShape(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "config/grafana/dashboards/rooms.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard needs a uid and a title")
	}
	ids := map[int]bool{}
	var titles []string
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			titles = append(titles, p.Title)
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") {
				t.Errorf("panel %q: unbalanced parentheses in %s", p.Title, tg.Expr)
			}
		}
	}
	for _, want := range []string{"Throughput", "Latency", "Lag and queues", "Errors", "Connections and processes"} {
		if !slices.Contains(titles, want) {
			t.Errorf("dashboard has no %q row", want)
		}
	}
	prov, err := os.ReadFile(filepath.Join(root, "config/grafana/provisioning/dashboards/rooms.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	compose, err := os.ReadFile(filepath.Join(root, "compose/compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"../config/grafana/dashboards:/etc/grafana/dashboards:ro", "../config/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro"} {
		if !bytes.Contains(compose, []byte(want)) {
			t.Errorf("compose/compose.yaml does not mount %s", want)
		}
	}
	if !bytes.Contains(prov, []byte("path: /etc/grafana/dashboards")) {
		t.Error("the dashboard provider does not read /etc/grafana/dashboards")
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
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

// readUntil reads frames until one of each wanted type has arrived.
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
