// Package api is the backend's HTTP surface: routes, request parsing, and the
// encoders that stream documents out of the store.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/annotated-data/pipeline/internal/store"
)

// Exporter is what the API needs of the store.
type Exporter interface {
	Export(ctx context.Context, r store.Range, fn func(store.Page) error) error
	Check(ctx context.Context) error
}

// Options tune the API.
type Options struct {
	PageSize    int
	DefaultZone *time.Location
}

// NewServer returns the whole API. Every route is listed here.
func NewServer(log *slog.Logger, st Exporter, opts Options) http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, apiError{Code: "not_found", Message: "no such endpoint: " + r.URL.Path})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, apiError{Code: "method_not_allowed", Message: r.Method + " is not allowed on " + r.URL.Path})
	})

	r.Get("/healthz", healthz)
	r.Get("/readyz", readyz(st))
	r.Get("/getJsonStream", streamDocuments(log, st, opts, jsonArray))
	r.Get("/getStream", streamDocuments(log, st, opts, ndjson))
	return r
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func readyz(st Exporter) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := st.Check(ctx); err != nil {
			w.Header().Set("Retry-After", "5")
			writeError(w, http.StatusServiceUnavailable, apiError{Code: "elasticsearch_unavailable", Message: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}
