package admin_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"rooms/shared/admin"
)

func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- admin.Serve(ctx, ln, admin.Handler(admin.NewRegistry(), log), log) }()
	base := "http://" + ln.Addr().String()

	tests := []struct {
		path, method string
		status       int
		contains     string
	}{
		{"/metrics", http.MethodGet, 200, "go_goroutines"},
		{"/metrics", http.MethodGet, 200, "process_resident_memory_bytes"},
		{"/healthz", http.MethodGet, 200, `"ok"`},
		{"/debug/pprof/", http.MethodGet, 200, "goroutine"},
		{"/debug/pprof/heap?debug=1", http.MethodGet, 200, "heap profile"},
		{"/metrics", http.MethodPost, 405, ""},
		{"/nothing", http.MethodGet, 404, ""},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, base+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.contains) {
			t.Errorf("%s %s: %d, want %d containing %q", tt.method, tt.path, resp.StatusCode, tt.status, tt.contains)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("admin server still answers after Serve returned")
	}
}
