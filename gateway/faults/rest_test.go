//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// restProber asks every gateway, in turn, for a room's latest messages
// (which needs PostgreSQL) and its clients (which needs Redis), one
// request every interval, while faults run. API.md allows an answer of 200
// or 503 unavailable (a dependency down or the server draining), in the
// documented error shape; anything else (a 500 above all) is a failure. A
// request that gets no answer at all (its gateway killed, frozen or
// stopping) is counted, not judged: there is no server to answer it.
type restProber struct {
	t      *testing.T
	urls   []string
	room   string
	token  string
	client *http.Client

	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	statuses map[string]int // "GET messages 200" → count
	noAnswer int
	bad      []string
}

func startRESTProber(t *testing.T, s *stack, room, token string, interval time.Duration) *restProber {
	p := &restProber{t: t, room: room, token: token, stop: make(chan struct{}), done: make(chan struct{}),
		statuses: map[string]int{},
		// Longer than a gateway's own bound on a request
		// (HTTP_REQUEST_TIMEOUT, 10 s) and than the longest freeze of a
		// gateway (15 s).
		client: &http.Client{Timeout: 30 * time.Second}}
	for i := range s.gateways {
		p.urls = append(p.urls, s.url(i))
	}
	go p.run(interval)
	return p
}

func (p *restProber) run(interval time.Duration) {
	defer close(p.done)
	paths := map[string]string{
		"messages": "/api/chat/rooms/" + p.room + "/messages?limit=5",
		"clients":  "/api/chat/rooms/" + p.room + "/clients",
	}
	kinds := []string{"messages", "clients"}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		base := p.urls[i%len(p.urls)]
		kind := kinds[(i/len(p.urls))%len(kinds)]
		p.probe(base, kind, paths[kind])
	}
}

func (p *restProber) probe(base, kind, path string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	if err != nil {
		p.t.Errorf("rest probe: %v", err)
		return
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.client.Do(req)
	if err != nil {
		p.mu.Lock()
		p.noAnswer++
		p.mu.Unlock()
		return
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.statuses[fmt.Sprintf("%s %d", kind, resp.StatusCode)]++
	switch resp.StatusCode {
	case http.StatusOK:
		return
	case http.StatusServiceUnavailable:
		var e map[string]string
		if json.Unmarshal(body, &e) == nil && e["code"] == "unavailable" && e["message"] != "" && len(e) == 2 {
			return
		}
	}
	p.bad = append(p.bad, fmt.Sprintf("%s %s: %d %s", base, path, resp.StatusCode, strings.TrimSpace(string(body))))
}

// finish stops the prober and checks what it saw: every answer allowed,
// and enough of them 200 that the probe measured something.
func (p *restProber) finish(r *result) {
	p.t.Helper()
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	var keys []string
	total := 0
	for k, n := range p.statuses {
		keys = append(keys, fmt.Sprintf("%s: %d", k, n))
		total += n
	}
	sort.Strings(keys)
	p.t.Logf("REST probes during the faults: %s; no answer: %d", strings.Join(keys, ", "), p.noAnswer)
	r.measure("rest_probes_answered", float64(total))
	r.measure("rest_probes_unavailable", float64(p.statuses["messages 503"]+p.statuses["clients 503"]))
	r.measure("rest_probes_unanswered", float64(p.noAnswer))
	for _, b := range p.bad {
		p.t.Errorf("REST answer outside API.md's 200 or 503 unavailable: %s", b)
	}
	if p.statuses["messages 200"] == 0 || p.statuses["clients 200"] == 0 {
		p.t.Errorf("no REST probe was answered 200 (%v): nothing was measured", keys)
	}
}
