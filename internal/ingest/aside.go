package ingest

import (
	"log/slog"
	"sync"
	"time"

	"github.com/annotated-data/pipeline/internal/document"
	"github.com/annotated-data/pipeline/internal/pipeline"
)

// asides sets aside the members of documents that their index's mapping cannot
// take (document.SetAside), counts the documents stored that way, and logs them at
// most once per interval.
type asides struct {
	log     *slog.Logger
	metrics *Metrics
	every   time.Duration

	mu     sync.Mutex
	last   time.Time // when the last line was logged
	unsaid int       // documents since then
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
	a.mu.Lock()
	a.unsaid++
	if time.Since(a.last) < a.every {
		a.mu.Unlock()
		return
	}
	n := a.unsaid
	a.last, a.unsaid = time.Now(), 0
	a.mu.Unlock()
	// documents: how many since the previous such line, at most one per a.every.
	a.log.Warn("documents stored with fields set aside: the index's mapping could not take them, so they are kept under "+document.AsideKey+", served as published but not searchable (see webserver_documents_set_aside_total)",
		"documents", n, "latest_subject", subject, "latest_refusal", refusal)
}
