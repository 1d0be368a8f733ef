// Package api is the backend's HTTP surface: routes, request parsing, the encoders
// that stream documents out of the store, and the protections in front of them.
package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/klauspost/compress/gzhttp"
	"github.com/klauspost/compress/gzip"

	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/store"
)

// Exporter is what the API needs of the store.
type Exporter interface {
	Export(ctx context.Context, r store.Range, fn func(store.Page) error) error
	Check(ctx context.Context) error
}

// NewServer returns the whole API. Every route is listed here, with what guards it.
func NewServer(log *slog.Logger, cfg config.Backend, st Exporter, m *Metrics) (http.Handler, error) {
	// BestSpeed: a JSON stream still shrinks several times over, and the CPU it
	// saves goes to Elasticsearch and to other streams.
	gzipped, err := gzhttp.NewWrapper(gzhttp.CompressionLevel(gzip.BestSpeed), gzhttp.EnableZstd(false))
	if err != nil {
		return nil, fmt.Errorf("gzip middleware: %w", err)
	}
	compress := func(next http.Handler) http.Handler { return gzipped(next) }
	limited := rateLimit(cfg.RateLimit, cfg.RateWindow)
	keyed := requireAPIKey(cfg.APIKeys)
	streams := limitStreams(cfg.MaxStreams, cfg.MaxClientStreams, m)
	rules := rangeRules{defaultZone: cfg.DefaultZone, maxRange: cfg.MaxRange, pageSize: cfg.PageSize}

	describe, err := openAPI(len(cfg.APIKeys) > 0)
	if err != nil {
		return nil, err
	}

	r := chi.NewRouter()
	r.Use(clientIP(cfg.TrustedProxies), observe(log, m), SecurityHeaders(cfg.TLS.Mode != config.TLSOff), limitHeaderBytes(MaxHeaderBytes), allowOrigins(cfg.CORSOrigins),
		normalizePath, middleware.GetHead) // HEAD wherever GET (RFC 9110, 9.3.2)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, apiError{Code: "not_found", Message: "no such endpoint: " + shorten(r.URL.EscapedPath(), maxEcho) + "; see /openapi.json"})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, apiError{Code: "method_not_allowed", Message: r.Method + " is not allowed on " + shorten(r.URL.EscapedPath(), maxEcho) + "; use GET"})
	})

	r.Get("/healthz", healthz)
	r.Get("/readyz", readyz(st))
	r.With(limited).Get("/openapi.json", describe)
	r.With(limited, keyed).Method(http.MethodGet, "/metrics", m.handler())
	r.With(limited, keyed, compress, streams).Get("/getJsonStream",
		streamDocuments(rules, cfg.StallTimeout, st, m, func(*http.Request) format { return jsonArray }))
	r.With(limited, keyed, compress, streams).Get("/getStream",
		streamDocuments(rules, cfg.StallTimeout, st, m, func(r *http.Request) format {
			if wantsEventStream(r) {
				return serverSentEvents
			}
			return ndjson
		}))
	return r, nil
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func readyz(st Exporter) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := st.Check(ctx); err != nil {
			requestInfoFrom(r.Context()).err = err
			unavailable(w, apiError{Code: "elasticsearch_unavailable", Message: "the document store is not reachable"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}
