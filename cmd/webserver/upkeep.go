package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/annotated-data/pipeline/internal/audit"
	"github.com/annotated-data/pipeline/internal/ingest"
	"github.com/annotated-data/pipeline/internal/natsaudit"
	"github.com/annotated-data/pipeline/internal/retention"
)

// partlyIndexedEvery is how often the webserver counts the documents stored with
// fields not indexed: a search of two filters, cheap at any size.
const partlyIndexedEvery = time.Minute

// startUpkeep starts what runs beside ingestion: the count of partly indexed
// documents and, when configured, index retention (ES_RETENTION) and the
// periodic audit (AUDIT_INTERVAL). The returned function stops them and waits
// until they have.
func startUpkeep(ctx context.Context, svc *services, reg prometheus.Registerer, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	cfg := svc.cfg
	var wg sync.WaitGroup
	if cfg.Upkeep.Retention > 0 {
		r := retention.New(svc.store, retention.Config{
			Prefix: cfg.Elasticsearch.Config.IndexPrefix, Monthly: cfg.Index.Interval == "month", Retention: cfg.Upkeep.Retention,
		}, log, reg)
		maxAge := cfg.StreamMaxAge // what the stream gets if the ingester creates it
		if s, err := svc.js.Stream(ctx, cfg.Stream); err == nil {
			maxAge = s.CachedInfo().Config.MaxAge
		}
		r.WarnIfStreamKeepsLess(cfg.Stream, maxAge)
		wg.Go(func() { r.Run(ctx) })
	}
	wg.Go(func() { ingest.WatchPartlyIndexed(ctx, svc.store, partlyIndexedEvery, reg, log) })
	if cfg.Upkeep.AuditInterval > 0 {
		a := newAuditor(svc)
		g := audit.NewGauges(reg, cfg.Upkeep.AuditInterval)
		wg.Go(func() { a.Periodically(ctx, cfg.Upkeep.AuditInterval, cfg.Upkeep.AuditWindow, g, log) })
	}
	return func() { cancel(); wg.Wait() }
}

// newAuditor audits what svc's webserver ingests: the periodic audit's and
// webserver audit's.
func newAuditor(svc *services) *audit.Auditor {
	a := &audit.Auditor{
		Stream: natsaudit.JetStream{JS: svc.js, Stream: svc.cfg.Stream, DLQStream: svc.cfg.DLQStream, Durable: svc.cfg.Durable},
		Index:  svc.store,
		Name:   svc.cfg.Stream,
	}
	// Documents acknowledged just before the audit read the ack floor become
	// searchable at the next refresh; a second more covers the refresh itself.
	// (With refreshes off, -1, there is nothing to wait for.)
	if refresh, err := time.ParseDuration(svc.cfg.Index.RefreshInterval); err == nil && refresh > 0 {
		a.Visible = refresh + time.Second
	}
	return a
}
