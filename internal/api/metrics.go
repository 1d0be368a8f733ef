package api

import (
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
	queries   *prometheus.HistogramVec
	failures  *prometheus.CounterVec
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
			Help:    "Latency of Elasticsearch requests (open_pit, search, close_pit), failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"operation"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "backend_elasticsearch_request_failures_total",
			Help: "Elasticsearch requests that failed, by operation."}, []string{"operation"}),
	}
	reg.MustRegister(m.requests, m.duration, m.documents, m.streams, m.queries, m.failures)
	return m
}

// ObserveQuery records one Elasticsearch request; it is a store.QueryObserver.
func (m *Metrics) ObserveQuery(op string, took time.Duration, err error) {
	m.queries.WithLabelValues(op).Observe(took.Seconds())
	if err != nil {
		m.failures.WithLabelValues(op).Inc()
	}
}

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}
