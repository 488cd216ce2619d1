package tracing_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"rooms/shared/tracing"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestEnabled(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing set", nil, false},
		{"exporter otlp", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, true},
		{"sdk disabled", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, false},
		{"sdk disabled false", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, true},
		{"exporter none", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, false},
		{"other exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false},
		{"service name only", map[string]string{"OTEL_SERVICE_NAME": "x"}, false},
	}
	for _, tt := range tests {
		if got := tracing.Enabled(env(tt.env)); got != tt.want {
			t.Errorf("%s: Enabled = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// With tracing off the provider is the no-op one: spans do not record,
// carry no context to propagate, and nothing runs in the background or
// touches the network, even with an endpoint in the process environment.
func TestOffIsNoop(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	conns := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns++
			mu.Unlock()
			c.Close()
		}
	}()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	t.Setenv("OTEL_SDK_DISABLED", "true")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")

	before := runtime.NumGoroutine()
	for _, e := range []map[string]string{nil, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + ln.Addr().String(), "OTEL_SDK_DISABLED": "true"}} {
		p, err := tracing.New(context.Background(), env(e), "test")
		if err != nil {
			t.Fatal(err)
		}
		if p.Enabled {
			t.Fatal("enabled")
		}
		if _, ok := p.TracerProvider.(noop.TracerProvider); !ok {
			t.Fatalf("provider is %T, want noop.TracerProvider", p.TracerProvider)
		}
		ctx, span := p.Tracer("t").Start(context.Background(), "x")
		if span.IsRecording() || span.SpanContext().IsValid() {
			t.Fatal("no-op span records or has a context")
		}
		if tp := tracing.Traceparent(ctx); tp != "" {
			t.Fatalf("traceparent %q from a no-op span", tp)
		}
		if a := tracing.LogAttr(span); a.Key != "" {
			t.Fatalf("log attr %v for a no-op span", a)
		}
		span.End()
		if n := runtime.NumGoroutine(); n > before {
			t.Fatalf("%d goroutines after building a disabled provider, %d before", n, before)
		}
		if err := p.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // more than the schedule delay
	mu.Lock()
	defer mu.Unlock()
	if conns != 0 {
		t.Fatalf("%d connections to the endpoint with tracing off", conns)
	}
}

// With tracing on, spans reach an OTLP/HTTP receiver, with the service
// name, and Shutdown flushes them.
func TestExportsOverOTLPHTTP(t *testing.T) {
	var mu sync.Mutex
	var got []*coltracepb.ExportTraceServiceRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		req := &coltracepb.ExportTraceServiceRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_SERVICE_NAME", "")
	e := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL}
	p, err := tracing.New(context.Background(), env(e), "rooms-test")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Enabled {
		t.Fatal("not enabled")
	}
	ctx, parent := p.Tracer("t").Start(context.Background(), "parent")
	tp := tracing.Traceparent(ctx)
	if tp == "" {
		t.Fatal("no traceparent")
	}
	if a := tracing.LogAttr(parent); a.Value.String() != parent.SpanContext().TraceID().String() {
		t.Fatalf("log attr %v", a)
	}
	// The traceparent carries the span context across a process boundary.
	rctx := tracing.WithRemoteParent(context.Background(), tp)
	_, child := p.Tracer("t").Start(rctx, "child")
	if child.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Fatal("child of the extracted context is in another trace")
	}
	child.End()
	parent.End()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	names := map[string]string{}
	for _, req := range got {
		for _, rs := range req.ResourceSpans {
			var service string
			for _, a := range rs.Resource.Attributes {
				if a.Key == "service.name" {
					service = a.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					names[s.Name] = service
				}
			}
		}
	}
	if names["parent"] != "rooms-test" || names["child"] != "rooms-test" {
		t.Fatalf("exported spans (name → service): %v", names)
	}
}

func TestSpanContextRejectsGarbage(t *testing.T) {
	for _, tp := range []string{"", "x", "00-00000000000000000000000000000000-0000000000000000-01"} {
		if tracing.SpanContext(tp).IsValid() {
			t.Errorf("%q parsed as valid", tp)
		}
		if ctx := tracing.WithRemoteParent(context.Background(), tp); trace.SpanContextFromContext(ctx).IsValid() {
			t.Errorf("%q gave a parent", tp)
		}
	}
}
