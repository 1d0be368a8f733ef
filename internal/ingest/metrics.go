package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// Metrics counts what the ingester does. The Prometheus collectors are the only
// record: the progress line reads the same figures from them.
type Metrics struct {
	received       prometheus.Counter
	indexed        prometheus.Counter
	duplicates     prometheus.Counter
	retried        prometheus.Counter
	deadLettered   *prometheus.CounterVec
	settleFailures *prometheus.CounterVec
	fallbacks      *prometheus.CounterVec
	setAside       prometheus.Counter
	bulkSeconds    prometheus.Histogram
	bulkDocs       prometheus.Histogram
	unacked        prometheus.Gauge
	pending        prometheus.Gauge
	esUp           prometheus.Gauge
	esRefused      prometheus.Gauge
}

// NewMetrics registers the ingester's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		received:   prometheus.NewCounter(prometheus.CounterOpts{Name: "webserver_messages_received_total", Help: "Messages fetched from JetStream, redeliveries included."}),
		indexed:    prometheus.NewCounter(prometheus.CounterOpts{Name: "webserver_documents_indexed_total", Help: "Documents Elasticsearch created."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "webserver_documents_duplicate_total", Help: "Messages whose document already existed (redeliveries, republished ids); acked without a second copy."}),
		retried:    prometheus.NewCounter(prometheus.CounterOpts{Name: "webserver_documents_retried_total", Help: "Bulk items sent again after a temporary failure (429, 5xx, unreachable cluster)."}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "webserver_messages_dead_lettered_total", Help: "Messages moved to the dead-letter stream, by reason."},
			[]string{"reason"}),
		settleFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "webserver_settle_failures_total", Help: "Acks, naks and terms NATS did not take (the message is redelivered after the ack wait), by action."},
			[]string{"action"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "webserver_timestamp_fallbacks_total",
			Help: "Messages stored under their publish time because their own timestamp was missing or unreadable, by reason: missing, null, not_a_date, out_of_range (outside the accepted window around the publish time, or the years 0000-9999)."},
			[]string{"reason"}),
		setAside: prometheus.NewCounter(prometheus.CounterOpts{Name: "webserver_documents_set_aside_total",
			Help: "Documents stored with fields set aside under @unindexed, because their index's mapping could not take them (another message gave a field another type)."}),
		bulkSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "webserver_bulk_request_duration_seconds", Help: "Latency of bulk requests to Elasticsearch.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		bulkDocs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "webserver_bulk_request_documents", Help: "Documents per bulk request.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		unacked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "webserver_messages_unacked", Help: "Messages this process holds and has not yet acked, termed or released."}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "webserver_consumer_pending", Help: "Messages in the stream not yet delivered to the durable consumer."}),
		esUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "webserver_elasticsearch_up",
			Help: "1 while bulk requests go through, 0 while they fail as a whole: Elasticsearch unreachable, or refusing them (webserver_elasticsearch_refused)."}),
		esRefused: prometheus.NewGauge(prometheus.GaugeOpts{Name: "webserver_elasticsearch_refused",
			Help: "1 while Elasticsearch answers bulk requests with 401 or 403 (credentials refused, privileges missing), else 0."}),
	}
	reg.MustRegister(m.received, m.indexed, m.duplicates, m.retried, m.deadLettered, m.settleFailures, m.fallbacks, m.setAside,
		m.bulkSeconds, m.bulkDocs, m.unacked, m.pending, m.esUp, m.esRefused)
	m.esUp.Set(1)
	// Each known reason from 0: a series that first appears at 1 is no increase to
	// Prometheus, and the first dead letter of a reason after a start would go
	// unseen. The store's own error types (mapper_parsing_exception, …) are open
	// ended and still appear at their first dead letter.
	for _, r := range pipeline.Reasons() {
		m.deadLettered.WithLabelValues(string(r))
	}
	return m
}

// hold counts n fetched messages, which settle releases one by one.
func (m *Metrics) hold(n int) {
	m.received.Add(float64(n))
	m.unacked.Add(float64(n))
}

// figures is what the progress line shows.
type figures struct {
	indexed, duplicates, deadLettered, retried, unacked int64
}

func (m *Metrics) figures() figures {
	return figures{
		indexed:      value(m.indexed),
		duplicates:   value(m.duplicates),
		deadLettered: value(m.deadLettered),
		retried:      value(m.retried),
		unacked:      value(m.unacked),
	}
}

// value is the sum of what a counter or gauge (or a vector of them) holds now.
func value(c prometheus.Collector) int64 {
	ch := make(chan prometheus.Metric, 16)
	go func() { c.Collect(ch); close(ch) }()
	var sum float64
	for metric := range ch {
		var pb dto.Metric
		if metric.Write(&pb) != nil {
			continue
		}
		sum += pb.GetCounter().GetValue() + pb.GetGauge().GetValue()
	}
	return int64(sum)
}
