// Package admin reads the servers' admin endpoints (ADMIN_ADDR: /metrics,
// /debug/pprof) for the benchmark.
package admin

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

var client = http.Client{Timeout: 30 * time.Second}

// Get requests path from the admin server at base and returns the response
// of a 200 answer; the caller closes its body.
func Get(ctx context.Context, base, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s%s: %s", base, path, resp.Status)
	}
	return resp, nil
}
