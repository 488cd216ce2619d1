package admin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestGetReturnsOnlyA200(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, "up 1\n")
	}))
	defer srv.Close()
	ctx := context.Background()

	resp, err := Get(ctx, srv.URL+"/", "/metrics")
	if err != nil {
		t.Fatalf("Get /metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "up 1\n" {
		t.Fatalf("body %q", body)
	}
	if _, err := Get(ctx, srv.URL, "/nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Get /nope: error %v, want one naming the 404", err)
	}
}
