package audit

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Gauges export the figures of the last periodic audit.
type Gauges struct {
	messages, indexed, deadLettered, producerDuplicates prometheus.Gauge
	missing, indexedTwice, indexedAndDeadLettered       prometheus.Gauge
	clean, lastRun, duration                            prometheus.Gauge
	failures                                            prometheus.Counter
}

// NewGauges registers the audit's metrics with reg.
func NewGauges(reg prometheus.Registerer) *Gauges {
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
		clean:                  gauge("clean", "1 if the last audit found every message accounted for once and the stream held the whole window, else 0."),
		lastRun:                gauge("last_run_timestamp_seconds", "When the last audit finished (Unix time)."),
		duration:               gauge("duration_seconds", "How long the last audit took."),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "webserver_audit_failures_total",
			Help: "Periodic audits that could not run (Elasticsearch or NATS unreachable)."}),
	}
	reg.MustRegister(g.messages, g.indexed, g.deadLettered, g.producerDuplicates, g.missing, g.indexedTwice,
		g.indexedAndDeadLettered, g.clean, g.lastRun, g.duration, g.failures)
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
