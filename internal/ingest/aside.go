package ingest

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/annotated-data/pipeline/internal/dial"
	"github.com/annotated-data/pipeline/internal/document"
	"github.com/annotated-data/pipeline/internal/pipeline"
)

// asides sets aside the members of documents that their index's mapping cannot
// take (document.SetAside), counts the documents stored that way, and logs them at
// most once per interval.
type asides struct {
	log     *slog.Logger
	metrics *Metrics
	said    sampled
}

// reshape returns it with the members its refusal names set aside, or false when
// there is nothing left to set aside: then the refusal is not about its fields.
func (a *asides) reshape(it pipeline.Item, r pipeline.ItemResult) (pipeline.Item, bool) {
	body, ok := document.SetAside(it.Body, r.Reason)
	if !ok {
		return it, false
	}
	it.Body = body
	return it, true
}

// stored notes a document stored with members set aside.
func (a *asides) stored(subject, refusal string) {
	a.metrics.setAside.Inc()
	n, due := a.said.count()
	if !due {
		return
	}
	// documents: how many since the previous such line, at most one per interval.
	a.log.Warn("documents stored with fields set aside: the index's mapping could not take them, so they are kept under "+document.AsideKey+", served as published but not searchable (see webserver_documents_set_aside_total)",
		"documents", n, "latest_subject", subject, "latest_refusal", refusal)
}

// PartlyIndexedCounter counts the stored documents with fields that could not be
// indexed, by how: in Elasticsearch's _ignored, or set aside.
type PartlyIndexedCounter interface {
	PartlyIndexed(ctx context.Context) (ignored, setAside int64, err error)
}

// WatchPartlyIndexed keeps webserver_documents_partly_indexed current, counting
// every period until ctx ends. The count is the cluster's, so it is the same
// from every replica and survives restarts; a count that fails is logged once,
// and the gauge keeps its last value.
func WatchPartlyIndexed(ctx context.Context, c PartlyIndexedCounter, every time.Duration, reg prometheus.Registerer, log *slog.Logger) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "webserver_documents_partly_indexed",
		Help: "Stored documents with fields that could not be indexed (served whole, not searchable by those fields), by how: " +
			"ignored (listed in the document's _ignored) or set_aside (under " + document.AsideKey + ")."},
		[]string{"how"})
	reg.MustRegister(g)
	failing := false
	for {
		ignored, setAside, err := c.PartlyIndexed(ctx)
		switch {
		case err == nil:
			g.WithLabelValues("ignored").Set(float64(ignored))
			g.WithLabelValues("set_aside").Set(float64(setAside))
			if failing {
				log.Info("counting partly indexed documents works again")
			}
			failing = false
		case ctx.Err() == nil && !failing:
			log.Warn("cannot count partly indexed documents (webserver_documents_partly_indexed stays as it was)", "err", err)
			failing = true
		}
		if !dial.Sleep(ctx, every) {
			return
		}
	}
}
