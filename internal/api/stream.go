package api

import (
	"bufio"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/annotated-data/pipeline/internal/datetime"
	"github.com/annotated-data/pipeline/internal/store"
)

// format writes documents in one response encoding.
type format struct {
	contentType string
	open        string
	separator   string // between documents
	close       string
}

var (
	jsonArray = format{contentType: "application/json", open: "[", separator: ",", close: "]\n"}
	ndjson    = format{contentType: "application/x-ndjson", separator: "\n", close: "\n"}
)

// streamDocuments serves the documents of [start_date, end_date) in f, page by page,
// flushing after each page so a client sees the first documents at once.
func streamDocuments(log *slog.Logger, st Exporter, opts Options, f format) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rng, bad := parseRange(r, opts)
		if bad != nil {
			writeError(w, http.StatusBadRequest, *bad)
			return
		}
		rng.PageSize = opts.PageSize

		bw := bufio.NewWriterSize(w, 64<<10)
		flusher := http.NewResponseController(w)
		started, count := false, 0
		err := st.Export(r.Context(), rng, func(page store.Page) error {
			if !started {
				started = true
				w.Header().Set("Content-Type", f.contentType)
				w.WriteHeader(http.StatusOK)
				bw.WriteString(f.open)
			}
			for _, doc := range page {
				if count > 0 {
					bw.WriteString(f.separator)
				}
				bw.Write(doc)
				count++
			}
			if err := bw.Flush(); err != nil {
				return fmt.Errorf("write to client: %w", err)
			}
			return flusher.Flush()
		})
		switch {
		case err != nil && !started:
			log.Warn("export failed", "err", err)
			w.Header().Set("Retry-After", "5")
			writeError(w, http.StatusServiceUnavailable, apiError{Code: "elasticsearch_unavailable", Message: "the document store is not available; try again shortly"})
		case err != nil:
			// Headers are gone: the only honest signal left is an incomplete body.
			log.Warn("export failed mid-stream", "documents", count, "err", err)
			panic(http.ErrAbortHandler)
		default:
			if !started {
				w.Header().Set("Content-Type", f.contentType)
				w.WriteHeader(http.StatusOK)
				bw.WriteString(f.open)
			}
			if count > 0 || f.open != "" {
				bw.WriteString(f.close)
			}
			bw.Flush()
		}
	}
}

// parseRange reads start_date and end_date. Nothing from the request is ever placed
// into query text: both become times, sent to Elasticsearch as typed values.
func parseRange(r *http.Request, opts Options) (store.Range, *apiError) {
	q := r.URL.Query()
	var rng store.Range
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"start_date", &rng.From}, {"end_date", &rng.To}} {
		raw := q.Get(p.name)
		if raw == "" {
			return rng, &apiError{Code: "missing_parameter", Param: p.name, Message: p.name + " is required, e.g. 2023-03-09T19:40:00"}
		}
		t, err := datetime.Parse(raw, opts.DefaultZone)
		if err != nil {
			return rng, &apiError{Code: "invalid_parameter", Param: p.name, Message: err.Error()}
		}
		*p.dst = t
	}
	if rng.From.After(rng.To) {
		return rng, &apiError{Code: "invalid_range", Param: "start_date", Message: "start_date is after end_date"}
	}
	return rng, nil
}
