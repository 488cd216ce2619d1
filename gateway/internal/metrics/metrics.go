// Package metrics defines the gateway's Prometheus metrics, grouped by the
// component that updates them. New registers them on the process's
// registry (built in package app); each component gets its part passed
// explicitly and falls back to Discard's when it is given none.
//
// Every metric is named rooms_gateway_… and carries only labels with a
// small, fixed set of values (protocol, reason, route template, status
// class): never a user, room or connection. Vectors are resolved once, at
// construction, for every label value known in advance, so the hot path
// only increments or observes and every series is exported from the start.
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Gateway is every metric of the gateway, by component.
type Gateway struct {
	WS      *WS
	Produce *Produce
	Fanout  *Fanout
	HTTP    *HTTP
}

// LatencyBuckets are the buckets, in seconds, of the message latency
// histograms: 1 ms to 10 s.
var LatencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New creates the gateway's metrics and registers them on reg. A nil reg
// creates them unregistered (what Discard does).
func New(reg prometheus.Registerer) *Gateway {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := factory{reg}
	rl := f.counterVec("rooms_gateway_rate_limited_total",
		"Requests refused by a rate limit, by action (send, login, register).", "action")
	return &Gateway{
		WS:      newWS(f, rl),
		Produce: newProduce(f),
		Fanout:  newFanout(f),
		HTTP:    newHTTP(f, rl),
	}
}

// Discard returns metrics registered nowhere, for components built without
// any (tests).
func Discard() *Gateway { return New(nil) }

type factory struct{ reg prometheus.Registerer }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

// WS are the WebSocket server's metrics.
type WS struct {
	// Conns counts open connections per protocol.
	ConnsV2, ConnsLegacy prometheus.Gauge
	// FramesIn and FramesOut count data frames read and written.
	FramesIn, FramesOut prometheus.Counter
	// Accepted counts sends handed to the producer; Acked those whose
	// delivery report said they are in the log.
	Accepted, Acked prometheus.Counter
	// Failed counts sends answered with an error, by reason.
	FailedInvalid, FailedRateLimited, FailedBusy, FailedUnconfirmed prometheus.Counter
	// AckLatency is accept → delivery report; DeliveryLatency is accept
	// (the message's time_created) → its frame written to a socket.
	AckLatency, DeliveryLatency prometheus.Histogram
	// RateLimitedSend counts sends refused by the per-user send limit.
	RateLimitedSend prometheus.Counter

	closes *prometheus.CounterVec
}

// Failure reasons of rooms_gateway_messages_failed_total.
const (
	ReasonInvalid     = "invalid"      // the frame failed validation
	ReasonRateLimited = "rate_limited" // the per-user send limit
	ReasonBusy        = "busy"         // the producer refused it (queue full, unavailable)
	ReasonUnconfirmed = "unconfirmed"  // the delivery report failed or timed out
)

// closeCodes are the server-initiated close codes counted by
// rooms_gateway_ws_closes_total.
var closeCodes = []int{1001, 1008, 1009, 1011, 1013, 4001, 4008, 4029}

func newWS(f factory, rl *prometheus.CounterVec) *WS {
	conns := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "rooms_gateway_ws_connections",
		Help: "Open WebSocket connections, by protocol.",
	}, []string{"protocol"})
	f.reg.MustRegister(conns)
	failed := f.counterVec("rooms_gateway_messages_failed_total",
		"Messages sent by clients and answered with an error, by reason.", "reason")
	m := &WS{
		ConnsV2:           conns.WithLabelValues("v2"),
		ConnsLegacy:       conns.WithLabelValues("legacy"),
		FramesIn:          f.counter("rooms_gateway_ws_frames_received_total", "WebSocket data frames read from clients."),
		FramesOut:         f.counter("rooms_gateway_ws_frames_sent_total", "WebSocket data frames written to clients."),
		Accepted:          f.counter("rooms_gateway_messages_accepted_total", "Messages accepted from clients and handed to the Kafka producer."),
		Acked:             f.counter("rooms_gateway_messages_acked_total", "Accepted messages whose delivery report confirmed them in the log."),
		FailedInvalid:     failed.WithLabelValues(ReasonInvalid),
		FailedRateLimited: failed.WithLabelValues(ReasonRateLimited),
		FailedBusy:        failed.WithLabelValues(ReasonBusy),
		FailedUnconfirmed: failed.WithLabelValues(ReasonUnconfirmed),
		AckLatency: f.histogram("rooms_gateway_ack_latency_seconds",
			"Time from accepting a message to its Kafka delivery report.", LatencyBuckets),
		DeliveryLatency: f.histogram("rooms_gateway_delivery_latency_seconds",
			"Time from accepting a message (its time_created) to writing it to a socket of this gateway.", LatencyBuckets),
		closes: f.counterVec("rooms_gateway_ws_closes_total",
			"Connections closed by the server with a close frame, by close code.", "code"),
	}
	m.RateLimitedSend = rl.WithLabelValues("send")
	for _, c := range closeCodes {
		m.closes.WithLabelValues(strconv.Itoa(c))
	}
	return m
}

// Closed counts a server-initiated close with code.
func (m *WS) Closed(code int) {
	m.closes.WithLabelValues(strconv.Itoa(code)).Inc()
}

// Produce are the Kafka producer's metrics.
type Produce struct {
	// DeliveryErrors counts failed delivery reports; Fatal counts fatal
	// producer errors (each recreates the producer).
	DeliveryErrors, Fatal prometheus.Counter
	reg                   prometheus.Registerer
}

func newProduce(f factory) *Produce {
	return &Produce{
		DeliveryErrors: f.counter("rooms_gateway_kafka_delivery_errors_total", "Kafka delivery reports that failed (outcome unknown)."),
		Fatal:          f.counter("rooms_gateway_kafka_fatal_errors_total", "Fatal Kafka producer errors (the producer is recreated)."),
		reg:            f.reg,
	}
}

// QueueDepth exports len() (records held by the producer, waiting for
// delivery) as rooms_gateway_kafka_queue_depth, read at each scrape.
func (m *Produce) QueueDepth(length func() int) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rooms_gateway_kafka_queue_depth",
		Help: "Records held by the Kafka producer: queued or in flight, waiting for their delivery report.",
	}, func() float64 { return float64(length()) }))
}

// Fanout are the fan-out reader's metrics.
type Fanout struct {
	// EntriesMessage, EntriesPresence and EntriesTyping count stream
	// entries read, by kind.
	EntriesMessage, EntriesPresence, EntriesTyping prometheus.Counter
	// ReadLag is now minus the time in each entry's id (when a worker
	// appended it).
	ReadLag prometheus.Histogram
	// ReadErrors counts failed XREADs.
	ReadErrors prometheus.Counter
	// GapRepaired and GapFailed count seq jumps backfilled from PostgreSQL.
	GapRepaired, GapFailed prometheus.Counter
	// Duplicates counts messages dropped as already delivered.
	Duplicates prometheus.Counter
}

func newFanout(f factory) *Fanout {
	entries := f.counterVec("rooms_gateway_fanout_entries_total", "Fan-out stream entries read from Redis, by kind.", "kind")
	gaps := f.counterVec("rooms_gateway_fanout_gap_repairs_total", "Seq gaps of a room repaired from PostgreSQL, by result.", "result")
	return &Fanout{
		EntriesMessage:  entries.WithLabelValues("message"),
		EntriesPresence: entries.WithLabelValues("presence"),
		EntriesTyping:   entries.WithLabelValues("typing"),
		ReadLag: f.histogram("rooms_gateway_fanout_read_lag_seconds",
			"Time from a worker appending a fan-out entry to this gateway reading it.", LatencyBuckets),
		ReadErrors:  f.counter("rooms_gateway_fanout_read_errors_total", "Failed reads of the fan-out streams (retried)."),
		GapRepaired: gaps.WithLabelValues("ok"),
		GapFailed:   gaps.WithLabelValues("error"),
		Duplicates:  f.counter("rooms_gateway_fanout_duplicates_total", "Fan-out messages dropped because their seq was already delivered."),
	}
}

// ObserveEntryLag observes the read lag of the stream entry id ("<ms>-<n>").
func (m *Fanout) ObserveEntryLag(id string, now time.Time) {
	ms := int64(0)
	for i := 0; i < len(id) && id[i] != '-'; i++ {
		c := id[i]
		if c < '0' || c > '9' {
			return
		}
		ms = ms*10 + int64(c-'0')
	}
	if lag := now.Sub(time.UnixMilli(ms)); lag >= 0 {
		m.ReadLag.Observe(lag.Seconds())
	} else {
		m.ReadLag.Observe(0)
	}
}

// HTTP are the REST API's metrics.
type HTTP struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// RateLimitedLogin and RateLimitedRegister count refused attempts.
	RateLimitedLogin, RateLimitedRegister prometheus.Counter
}

func newHTTP(f factory, rl *prometheus.CounterVec) *HTTP {
	m := &HTTP{
		requests: f.counterVec("rooms_gateway_http_requests_total",
			"HTTP requests answered, by method, route template and status class.", "method", "route", "code"),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rooms_gateway_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route template.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"route"}),
	}
	f.reg.MustRegister(m.duration)
	m.RateLimitedLogin = rl.WithLabelValues("login")
	m.RateLimitedRegister = rl.WithLabelValues("register")
	return m
}

// Request counts one answered request. route is the matched route template
// (never the raw path); status the HTTP status.
func (m *HTTP) Request(method, route string, status int, d time.Duration) {
	switch method {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS":
	default:
		method = "OTHER"
	}
	m.requests.WithLabelValues(method, route, statusClass(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

func statusClass(s int) string {
	switch {
	case s >= 500:
		return "5xx"
	case s >= 400:
		return "4xx"
	case s >= 300:
		return "3xx"
	case s >= 200:
		return "2xx"
	default:
		return "1xx"
	}
}
