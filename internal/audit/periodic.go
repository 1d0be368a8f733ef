package audit

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Gauges export the figures of the last periodic audit, how often it runs, and its
// failures.
type Gauges struct {
	messages, indexed, deadLettered, producerDuplicates prometheus.Gauge
	missing, indexedTwice, indexedAndDeadLettered       prometheus.Gauge
	clean, lastRun, duration                            prometheus.Gauge
	figures                                             *untilFirstAudit
	interval                                            prometheus.Gauge
	failures                                            prometheus.Counter
}

// NewGauges registers the audit's metrics with reg, for audits every every. The
// figures are exported once the first audit has finished: before, a gauge at 0
// would read as an audit that found problems, and every start would page.
// webserver_audit_interval_seconds and webserver_audit_failures_total are
// exported from the start, so that an alert can tell an audit overdue from one
// not yet due.
func NewGauges(reg prometheus.Registerer, every time.Duration) *Gauges {
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "webserver_audit_" + name, Help: help})
	}
	g := &Gauges{
		messages:               gauge("messages", "Messages the stream holds in the last audit's window (up to the durable's ack floor)."),
		indexed:                gauge("indexed", "Of those, sequences with a document."),
		deadLettered:           gauge("dead_lettered", "Of those, sequences with a dead letter."),
		producerDuplicates:     gauge("producer_duplicates", "Of those, messages that repeated the Nats-Msg-Id of one indexed before."),
		missing:                gauge("missing", "Of those, messages neither indexed nor dead-lettered: lost; webserver audit --repair puts them back."),
		indexedTwice:           gauge("indexed_twice", "Sequences stored as more than one document."),
		indexedAndDeadLettered: gauge("indexed_and_dead_lettered", "Sequences both indexed and dead-lettered."),
		clean:                  gauge("clean", "1 if the last audit found every message accounted for once and the stream held the whole window, else 0. Absent until the first audit has finished."),
		lastRun:                gauge("last_run_timestamp_seconds", "When the last audit finished (Unix time). Absent until the first audit has finished."),
		duration:               gauge("duration_seconds", "How long the last audit took."),
		interval:               gauge("interval_seconds", "How often the periodic audit runs (AUDIT_INTERVAL); the first runs one interval after the start."),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "webserver_audit_failures_total",
			Help: "Periodic audits that could not run (Elasticsearch or NATS unreachable)."}),
	}
	g.figures = &untilFirstAudit{gauges: []prometheus.Gauge{g.messages, g.indexed, g.deadLettered, g.producerDuplicates,
		g.missing, g.indexedTwice, g.indexedAndDeadLettered, g.clean, g.lastRun, g.duration}}
	g.interval.Set(every.Seconds())
	reg.MustRegister(g.figures, g.interval, g.failures)
	return g
}

func (g *Gauges) set(r *Report, took time.Duration) {
	g.messages.Set(float64(r.Messages))
	g.indexed.Set(float64(r.Indexed))
	g.deadLettered.Set(float64(r.DeadLettered))
	g.producerDuplicates.Set(float64(r.ProducerDuplicates))
	g.missing.Set(float64(r.Missing))
	g.indexedTwice.Set(float64(len(r.IndexedTwice)))
	g.indexedAndDeadLettered.Set(float64(len(r.IndexedAndDeadLettered)))
	clean := 0.0
	if r.Clean() {
		clean = 1
	}
	g.clean.Set(clean)
	g.lastRun.Set(float64(time.Now().Unix()))
	g.duration.Set(took.Seconds())
	g.figures.audited.Store(true) // after the figures, so a scrape sees all or none
}

// untilFirstAudit collects its gauges only once an audit has set them.
type untilFirstAudit struct {
	gauges  []prometheus.Gauge
	audited atomic.Bool
}

func (u *untilFirstAudit) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range u.gauges {
		g.Describe(ch)
	}
}

func (u *untilFirstAudit) Collect(ch chan<- prometheus.Metric) {
	if !u.audited.Load() {
		return
	}
	for _, g := range u.gauges {
		g.Collect(ch)
	}
}

// Periodically audits the messages published in the last window, every every,
// until ctx ends, and exports the figures as g. Its state changes are logged once:
// when an audit first finds problems and when one is clean again.
func (a *Auditor) Periodically(ctx context.Context, every, window time.Duration, g *Gauges, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	wasClean := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		r, err := a.Audit(ctx, Window{Since: start.Add(-window)})
		if err != nil {
			if ctx.Err() == nil {
				g.failures.Inc()
				log.Warn("periodic audit failed", "err", err)
			}
			continue
		}
		g.set(r, time.Since(start))
		switch {
		case !r.Clean() && wasClean:
			log.Warn("audit found problems; see webserver audit", "missing", r.Missing, "indexed_twice", len(r.IndexedTwice),
				"indexed_and_dead_lettered", len(r.IndexedAndDeadLettered), "beyond_stream", r.BeyondStream != nil)
		case r.Clean() && !wasClean:
			log.Info("audit clean again")
		}
		wasClean = r.Clean()
	}
}
