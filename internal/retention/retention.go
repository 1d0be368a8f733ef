// Package retention deletes the webserver's own time-based indices once the whole
// period each covers is older than the retention, for clusters without index
// lifecycle management (ILM), such as the open-source distribution.
//
// An index is the webserver's when its name is the prefix, a dash and a date in the
// layout of the configured interval, nothing else: <prefix>-2023.03.09 for days,
// <prefix>-2023.03 for months. So the indices of a longer prefix that starts the
// same (annotations-lidar-2023.03.09 beside annotations-…), of another interval, or
// anyone else's are never touched, whatever the listing returns.
package retention

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Indices is what retention asks of Elasticsearch.
type Indices interface {
	// Indices lists the names of the prefix's indices (and perhaps others).
	Indices(ctx context.Context) ([]string, error)
	// DeleteIndex deletes one index.
	DeleteIndex(ctx context.Context, name string) error
}

// Config says which indices are the webserver's and how long they are kept. The
// zero value of a field takes the default beside it.
type Config struct {
	Prefix    string        // indices are <Prefix>-<date> (default annotations)
	Monthly   bool          // one index per month instead of per day
	Retention time.Duration // an index is deleted once its whole period is older than this; must be positive
	Every     time.Duration // how often to check (default 1h)
}

// Retention deletes expired indices.
type Retention struct {
	idx     Indices
	cfg     Config
	log     *slog.Logger
	deleted prometheus.Counter
	now     func() time.Time
}

// New returns a Retention whose deletions are counted in
// webserver_indices_deleted_total on reg.
func New(idx Indices, cfg Config, log *slog.Logger, reg prometheus.Registerer) *Retention {
	cfg.Prefix = cmp.Or(cfg.Prefix, "annotations")
	cfg.Every = cmp.Or(cfg.Every, time.Hour)
	r := &Retention{idx: idx, cfg: cfg, log: log, now: time.Now,
		deleted: prometheus.NewCounter(prometheus.CounterOpts{Name: "webserver_indices_deleted_total",
			Help: "Indices deleted because their whole period was older than ES_RETENTION."}),
	}
	reg.MustRegister(r.deleted)
	return r
}

// WarnIfStreamKeepsLess logs, once, that the stream drops messages before their
// indices expire (maxAge 0: the stream keeps them for ever): audit and replay reach
// only as far back as the stream.
func (r *Retention) WarnIfStreamKeepsLess(stream string, maxAge time.Duration) {
	if maxAge > 0 && maxAge < r.cfg.Retention {
		r.log.Warn("the stream keeps messages for less time than the indices are kept: audit and replay cannot reach the oldest documents",
			"stream", stream, "stream_max_age", maxAge.String(), "es_retention", r.cfg.Retention.String())
	}
}

// Run sweeps at once and then every Config.Every until ctx ends. A failed sweep is
// logged and tried again at the next one.
func (r *Retention) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Every)
	defer t.Stop()
	for {
		if _, err := r.Sweep(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("index retention failed; trying again later", "err", err, "next_in", r.cfg.Every.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep deletes every expired index of the prefix now, logging each deletion once,
// and returns their names.
func (r *Retention) Sweep(ctx context.Context) ([]string, error) {
	names, err := r.idx.Indices(ctx)
	if err != nil {
		return nil, fmt.Errorf("list indices %s-*: %w", r.cfg.Prefix, err)
	}
	now := r.now()
	var deleted []string
	for _, name := range names {
		end, ok := r.periodEnd(name)
		if !ok || !r.Expired(end, now) {
			continue
		}
		if err := r.idx.DeleteIndex(ctx, name); err != nil {
			return deleted, fmt.Errorf("delete index %s: %w", name, err)
		}
		r.deleted.Inc()
		r.log.Info("deleted index past its retention", "index", name, "period_ended", end.Format(time.DateOnly), "es_retention", r.cfg.Retention.String())
		deleted = append(deleted, name)
	}
	return deleted, nil
}

// Expired reports whether a period that ended at end is past the retention at now.
// The current period never is: it has not ended.
func (r *Retention) Expired(end, now time.Time) bool {
	return r.cfg.Retention > 0 && !end.After(now) && !end.After(now.Add(-r.cfg.Retention))
}

// periodEnd reads the period of one of the webserver's indices and returns when it
// ends; ok is false for any other index.
func (r *Retention) periodEnd(name string) (end time.Time, ok bool) {
	date, found := strings.CutPrefix(name, r.cfg.Prefix+"-")
	if !found {
		return time.Time{}, false
	}
	layout := "2006.01.02"
	if r.cfg.Monthly {
		layout = "2006.01"
	}
	start, err := time.Parse(layout, date)
	if err != nil || start.Format(layout) != date {
		return time.Time{}, false
	}
	if r.cfg.Monthly {
		return start.AddDate(0, 1, 0), true
	}
	return start.AddDate(0, 0, 1), true
}
