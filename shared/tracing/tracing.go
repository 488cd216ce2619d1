// Package tracing builds the OpenTelemetry TracerProvider both binaries pass
// to their components, and carries a span context across the process
// boundaries of a message (Kafka record headers, Redis stream entries) as a
// W3C traceparent.
//
// Tracing is configured by the standard OTEL_* environment variables and is
// off unless asked for: it is on when OTEL_TRACES_EXPORTER is "otlp" or
// OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set,
// and OTEL_SDK_DISABLED is not "true" (OTEL_TRACES_EXPORTER "none" turns it
// off as well). When on, spans go through a batch span processor
// (OTEL_BSP_*) to an OTLP/HTTP exporter, which reads the rest of its
// settings (endpoint, headers, timeout, TLS) from the same variables; the
// sampler is the SDK's (OTEL_TRACES_SAMPLER, default parent-based always
// on). When off, the provider is a no-op one: no goroutine, no network, and
// starting a span costs next to nothing.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Provider is a TracerProvider with a Shutdown that flushes the spans still
// buffered. Pass it (as a trace.TracerProvider) to the components.
type Provider struct {
	trace.TracerProvider
	// Enabled reports whether spans are exported (false: a no-op provider).
	Enabled  bool
	shutdown func(context.Context) error
}

// Noop returns a disabled Provider.
func Noop() *Provider {
	return &Provider{TracerProvider: noop.NewTracerProvider(), shutdown: func(context.Context) error { return nil }}
}

// Enabled reports whether the environment read through getenv asks for
// traces (see the package documentation).
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))) {
	case "otlp":
		return true
	case "":
	default:
		return false // "none", or an exporter this program does not have
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// New returns the Provider the environment asks for: a no-op one when
// tracing is off, otherwise an SDK provider exporting over OTLP/HTTP with
// service.name OTEL_SERVICE_NAME (default service). The exporter reads its
// own settings from the process environment.
func New(ctx context.Context, getenv func(string) string, service string) (*Provider, error) {
	if !Enabled(getenv) {
		return Noop(), nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	name := getenv("OTEL_SERVICE_NAME")
	if name == "" {
		name = service
	}
	res, err := resource.New(ctx,
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", name)),
	)
	if err != nil {
		// A malformed OTEL_RESOURCE_ATTRIBUTES still leaves a usable
		// resource; keep the service name.
		res = resource.NewSchemaless(attribute.String("service.name", name))
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Provider{TracerProvider: tp, Enabled: true, shutdown: tp.Shutdown}, nil
}

// Shutdown flushes the buffered spans and stops the exporter, within ctx's
// deadline.
func (p *Provider) Shutdown(ctx context.Context) error {
	if err := p.shutdown(ctx); err != nil {
		return fmt.Errorf("tracing shutdown: %w", err)
	}
	return nil
}

// OrNoop returns tp, or a no-op provider when tp is nil, for components
// whose options leave it unset.
func OrNoop(tp trace.TracerProvider) trace.TracerProvider {
	if tp == nil {
		return noop.NewTracerProvider()
	}
	return tp
}

// TraceparentKey is the name of the Kafka record header carrying the W3C
// traceparent of the span that produced the record.
const TraceparentKey = "traceparent"

// StreamField is the optional field of a message entry in the Redis fan-out
// streams carrying the W3C traceparent of the message's send; readers that
// do not know it ignore it.
const StreamField = "tp"

var propagator = propagation.TraceContext{}

// Traceparent returns the W3C traceparent of ctx's span, "" when it has no
// valid sampled-or-not span context (always "" with tracing off).
func Traceparent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c[TraceparentKey]
}

// SpanContext parses a W3C traceparent; the result is invalid when tp is
// empty or malformed.
func SpanContext(tp string) trace.SpanContext {
	if tp == "" {
		return trace.SpanContext{}
	}
	ctx := propagator.Extract(context.Background(), propagation.MapCarrier{TraceparentKey: tp})
	return trace.SpanContextFromContext(ctx)
}

// WithRemoteParent returns ctx carrying the span context of traceparent tp
// as its remote parent (ctx unchanged when tp is not a valid traceparent).
func WithRemoteParent(ctx context.Context, tp string) context.Context {
	sc := SpanContext(tp)
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

// LogAttr returns the trace_id attribute of span for log lines, or an empty
// attribute (which slog drops) when the span is not recording.
func LogAttr(span trace.Span) slog.Attr {
	if span == nil || !span.IsRecording() {
		return slog.Attr{}
	}
	return slog.String("trace_id", span.SpanContext().TraceID().String())
}
