// Package api is the backend's HTTP surface: routes, request parsing, the encoders
// that stream documents out of the store, and the protections in front of them.
package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/klauspost/compress/gzhttp"
	"github.com/klauspost/compress/gzip"

	"github.com/annotated-data/pipeline/internal/admin"
	"github.com/annotated-data/pipeline/internal/pipeline"
)

// Exporter is what the API needs of the store.
type Exporter interface {
	Export(ctx context.Context, r pipeline.Range, fn func(pipeline.Page) error) error
	Counts(ctx context.Context, r pipeline.CountsRequest) (pipeline.Counts, error)
	// FieldCaps returns the types of fields (see query.Caps), to read q.
	FieldCaps(ctx context.Context, fields []string) (map[string]map[string][]string, error)
	Check(ctx context.Context) error
}

// Config shapes what clients may ask for and how they are guarded. The zero
// value of a field takes the default beside it, except where 0 means "none".
type Config struct {
	PageSize int // most documents fetched per page while streaming (default 10000)
	// FirstPageSize is the first page's size; each next page doubles, up to
	// PageSize (default 1000, at most PageSize).
	FirstPageSize int
	// ExportSlices is how many slices of its point in time each stream reads in
	// parallel, merged back into order (default 1: one stream).
	ExportSlices int

	DefaultZone *time.Location // for dates written without a zone (default UTC)
	MaxRange    time.Duration  // longest range a request may ask for (0: unlimited)
	MaxStreams  int            // streams served at once (default 32)
	// MaxClientStreams is the most streams one client may hold at once (default
	// a quarter of MaxStreams, at least 1).
	MaxClientStreams int
	// A stream whose client takes less than MinRate bytes a second, over
	// StallTimeout of waiting for it, ends (see pace for the sizing).
	StallTimeout time.Duration // default 30s
	MinRate      int           // default 16 KiB/s
	// When every slot is taken, the stream that has waited longest for its
	// client, at least PreemptAfter, gives its slot to a newcomer (default 2s);
	// a newcomer waits up to SlotWait for that or a free slot before a 503
	// (default 4s).
	PreemptAfter time.Duration
	SlotWait     time.Duration

	MaxFollowers int           // follow=true streams at once, within MaxStreams (default half of MaxStreams, at least 1)
	Heartbeat    time.Duration // an idle follow stream sends a keep-alive this often (default 15s)

	APIKeys        []string // when set, the data endpoints and /metrics need one
	CORSOrigins    []string // origins whose pages may call the API
	RateLimit      int      // requests per RateWindow and client (0: no limit)
	RateWindow     time.Duration
	TrustedProxies []string // CIDRs whose X-Forwarded-For names the client

	HSTS bool // the API is served over HTTPS: tell browsers to keep to it

	// CursorKey authenticates the cursors handed to clients. Replicas behind one
	// load balancer need the same key, and one that survives restarts, so that a
	// client resumes on any of them.
	CursorKey []byte
}

func (c Config) withDefaults() Config {
	c.PageSize = cmp.Or(c.PageSize, 10000)
	c.FirstPageSize = min(cmp.Or(c.FirstPageSize, 1000), c.PageSize)
	c.ExportSlices = cmp.Or(c.ExportSlices, 1)
	if c.DefaultZone == nil {
		c.DefaultZone = time.UTC
	}
	c.MaxStreams = cmp.Or(c.MaxStreams, 32)
	c.MaxClientStreams = cmp.Or(c.MaxClientStreams, max(c.MaxStreams/4, 1))
	c.StallTimeout = cmp.Or(c.StallTimeout, 30*time.Second)
	c.MinRate = cmp.Or(c.MinRate, 16<<10)
	c.PreemptAfter = cmp.Or(c.PreemptAfter, 2*time.Second)
	c.SlotWait = cmp.Or(c.SlotWait, 4*time.Second)
	c.MaxFollowers = cmp.Or(c.MaxFollowers, max(c.MaxStreams/2, 1))
	c.Heartbeat = cmp.Or(c.Heartbeat, 15*time.Second)
	c.RateWindow = cmp.Or(c.RateWindow, time.Minute)
	return c
}

// NewServer returns the whole API. Every route is listed here, with what guards it.
// hub, when not nil, serves follow=true.
func NewServer(log *slog.Logger, cfg Config, st Exporter, hub Hub, m *Metrics) (http.Handler, error) {
	cfg = cfg.withDefaults()
	// BestSpeed: a JSON stream still shrinks several times over, and the CPU it
	// saves goes to Elasticsearch and to other streams.
	gzipped, err := gzhttp.NewWrapper(gzhttp.CompressionLevel(gzip.BestSpeed), gzhttp.EnableZstd(false))
	if err != nil {
		return nil, fmt.Errorf("gzip middleware: %w", err)
	}
	compress := func(next http.Handler) http.Handler { return gzipped(next) }
	limited := rateLimit(cfg.RateLimit, cfg.RateWindow)
	keyed := requireAPIKey(cfg.APIKeys)
	slots := newStreamSlots(cfg.MaxStreams, cfg.MaxClientStreams, cfg.PreemptAfter, cfg.SlotWait)
	streams := limitStreams(slots, cfg.StallTimeout, cfg.MinRate, m)
	rules := rangeRules{defaultZone: cfg.DefaultZone, maxRange: cfg.MaxRange, pageSize: cfg.PageSize, firstPageSize: cfg.FirstPageSize, slices: cfg.ExportSlices}
	docs := &streamer{rules: rules, st: st, m: m, cursors: cursors{key: cfg.CursorKey}}
	if hub != nil {
		docs.follow = &following{hub: hub, cursors: docs.cursors, slots: make(chan struct{}, cfg.MaxFollowers), heartbeat: cfg.Heartbeat, poll: hub.PollInterval(), m: m}
	}

	describe, err := openAPI(len(cfg.APIKeys) > 0)
	if err != nil {
		return nil, err
	}

	r := chi.NewRouter()
	r.Use(clientIP(cfg.TrustedProxies), observe(log, m), SecurityHeaders(cfg.HSTS), limitHeaderBytes(MaxHeaderBytes), allowOrigins(cfg.CORSOrigins),
		normalizePath, middleware.GetHead) // HEAD wherever GET (RFC 9110, 9.3.2)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, apiError{Code: "not_found", Message: "no such endpoint: " + shorten(r.URL.EscapedPath(), maxEcho) + "; see /openapi.json"})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, apiError{Code: "method_not_allowed", Message: r.Method + " is not allowed on " + shorten(r.URL.EscapedPath(), maxEcho) + "; use GET"})
	})

	r.Get("/healthz", admin.Healthz)
	r.Get("/readyz", readyz(st))
	r.With(limited).Get("/openapi.json", describe)
	// The browser page holds no data, so it needs no key; and it is not held
	// to the rate limit, so that a page whose API calls are refused can still
	// load and say why, rather than stay blank.
	web := webPage()
	r.Get("/", web)
	r.Get("/app.js", web)
	r.Get("/app.css", web)
	r.With(limited, keyed).Method(http.MethodGet, "/metrics", m.handler())
	// streams sits outside compress, to measure what crosses the network.
	r.With(limited, keyed, streams, compress).Get("/getJsonStream",
		docs.serve(func(*http.Request) format { return jsonArray }))
	r.With(limited, keyed, compress).Get("/getCounts", docs.counts)
	r.With(limited, keyed, streams, compress).Get("/getStream",
		docs.serve(func(r *http.Request) format {
			if wantsEventStream(r) {
				return serverSentEvents
			}
			return ndjson
		}))
	return r, nil
}

func readyz(st Exporter) http.HandlerFunc {
	check := admin.Check{Name: "elasticsearch", Fn: st.Check}
	return func(w http.ResponseWriter, r *http.Request) {
		// The API is public: say what is down, never why (the cause is logged).
		failed, degraded := admin.Probe(r.Context(), check)
		if failed != nil {
			err := failed[check.Name]
			requestInfoFrom(r.Context()).err = err
			// Red: some index has a shard without a copy, and every stream reads
			// all of them: this replica can serve nothing, and neither can another.
			var red interface{ Red() bool }
			if errors.As(err, &red) && red.Red() {
				unavailable(w, apiError{Code: "elasticsearch_red", Message: "the document store is reachable, but some of its indices have no copy available"})
				return
			}
			unavailable(w, apiError{Code: "elasticsearch_unavailable", Message: "the document store is not reachable"})
			return
		}
		// Yellow: every document is served, by this replica as by any other, so
		// it is ready; the body says that a node's loss is all that separates it
		// from red, for a person who looks.
		if degraded != nil {
			writeJSON(w, http.StatusOK, map[string]any{"status": "ready",
				"degraded": map[string]string{"elasticsearch": "a replica of the document store is missing: every document is served, with less redundancy"}})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}
