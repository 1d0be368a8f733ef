package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the backend's Prometheus metrics.
type Metrics struct {
	gatherer  prometheus.Gatherer
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	documents *prometheus.CounterVec
	streams   prometheus.Gauge
	// streamCuts counts streams the backend ended for their client's sake.
	streamCuts *prometheus.CounterVec
	queries    *prometheus.HistogramVec
	failures   *prometheus.CounterVec

	followers  prometheus.Gauge
	followed   prometheus.Counter
	followCuts *prometheus.CounterVec
	steps      *prometheus.HistogramVec
	stepDocs   prometheus.Counter
}

// NewMetrics registers the backend's metrics with reg, which /metrics serves.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		gatherer: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "backend_http_requests_total",
			Help: "HTTP requests by route pattern and status code."}, []string{"route", "code"}),
		// Streams of large ranges run for minutes: the buckets reach that far.
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "backend_http_request_duration_seconds",
			Help:    "Time from a request's arrival to the last byte of its response, by route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 14)}, []string{"route"}),
		documents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "backend_documents_streamed_total",
			Help: "Documents written to clients, by route pattern."}, []string{"route"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "backend_streams_in_flight",
			Help: "Document streams being served now."}),
		queries: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "backend_elasticsearch_request_duration_seconds",
			Help:    "Latency of Elasticsearch requests (open_pit, search, close_pit, refresh, field_caps, counts), failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"operation"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "backend_elasticsearch_request_failures_total",
			Help: "Elasticsearch requests that failed, by operation and cause (refused: answered 401 or 403, the credentials refused or a privilege missing; error: any other failure, the cluster unreachable, slow or failing)."},
			[]string{"operation", "cause"}),
	}
	m.followers = prometheus.NewGauge(prometheus.GaugeOpts{Name: "backend_followers",
		Help: "follow=true streams being served now."})
	m.followed = prometheus.NewCounter(prometheus.CounterOpts{Name: "backend_follow_documents_total",
		Help: "Live documents sent to followers (after their history)."})
	m.followCuts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "backend_follow_cut_total",
		Help: "Followers ended by the backend, by reason (too_slow: it did not take new documents; shutdown: the backend stopped)."}, []string{"reason"})
	m.steps = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "backend_follow_step_duration_seconds",
		Help:    "Time of one shared follow step (ack floor, refresh, query, hand-out), by outcome (ok, error).",
		Buckets: prometheus.ExponentialBuckets(0.002, 2, 14)}, []string{"outcome"})
	m.stepDocs = prometheus.NewCounter(prometheus.CounterOpts{Name: "backend_follow_step_documents_total",
		Help: "Documents the shared follow steps read, once however many followers take them."})
	m.streamCuts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "backend_stream_cut_total",
		Help: "Streams ended by the backend because of their client, by reason (too_slow: it took less than STREAM_MIN_RATE over STREAM_STALL_TIMEOUT; preempted: its slot went to a newcomer while it waited longest on its client)."}, []string{"reason"})
	m.streamCuts.WithLabelValues("too_slow")
	m.streamCuts.WithLabelValues("preempted")
	m.followCuts.WithLabelValues("too_slow")
	m.followCuts.WithLabelValues("shutdown")
	// Each operation's requests and failures from 0, so that the first one is an
	// increase, and the share of failures has every request under it.
	for _, op := range []string{"open_pit", "search", "close_pit", "refresh", "field_caps", "counts"} {
		m.queries.WithLabelValues(op)
		m.failures.WithLabelValues(op, causeRefused)
		m.failures.WithLabelValues(op, causeError)
	}
	reg.MustRegister(m.requests, m.duration, m.documents, m.streams, m.queries, m.failures,
		m.followers, m.followed, m.followCuts, m.steps, m.stepDocs, m.streamCuts)
	return m
}

// The causes of backend_elasticsearch_request_failures_total: a refusal is fixed
// by an operator (credentials, roles), not by waiting, and has an alert of its own.
const (
	causeRefused = "refused"
	causeError   = "error"
)

// ObserveQuery records one Elasticsearch request; it is a store.QueryObserver.
func (m *Metrics) ObserveQuery(op string, took time.Duration, err error) {
	m.queries.WithLabelValues(op).Observe(took.Seconds())
	if err != nil {
		cause := causeError
		if refusal(err) {
			cause = causeRefused
		}
		m.failures.WithLabelValues(op, cause).Inc()
	}
}

// refusal reports whether Elasticsearch answered err with 401 (credentials
// refused: wrong, expired, revoked) or 403 (a privilege missing), as the
// webserver's webserver_elasticsearch_refused does. The store's errors carry
// the status they were answered with.
func refusal(err error) bool {
	var answer interface{ StatusCode() int }
	if !errors.As(err, &answer) {
		return false
	}
	code := answer.StatusCode()
	return code == http.StatusUnauthorized || code == http.StatusForbidden
}

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}

// ObserveFollowStep records one shared follow step; it is the observer of
// follow.NewHub.
func (m *Metrics) ObserveFollowStep(took time.Duration, docs int, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.steps.WithLabelValues(outcome).Observe(took.Seconds())
	m.stepDocs.Add(float64(docs))
}
