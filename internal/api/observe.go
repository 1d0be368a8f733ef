package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

// requestInfo is what a handler tells the access log about its request.
type requestInfo struct {
	documents int
	err       error
}

type requestInfoKey struct{}

// requestInfoFrom returns the request's requestInfo; outside observe (in a unit
// test of one handler) a throwaway one.
func requestInfoFrom(ctx context.Context) *requestInfo {
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		return info
	}
	return &requestInfo{}
}

// routeOf is the route pattern that matched r, the label of its metrics; never the
// raw path, which would give every mistyped URL a time series of its own.
func routeOf(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil {
		if p := rc.RoutePattern(); p != "" {
			return p
		}
	}
	return "unmatched"
}

// recorder remembers the status and size of a response.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (rec *recorder) WriteHeader(status int) {
	if rec.status == 0 {
		rec.status = status
	}
	rec.ResponseWriter.WriteHeader(status)
}

func (rec *recorder) Write(p []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	n, err := rec.ResponseWriter.Write(p)
	rec.bytes += int64(n)
	return n, err
}

// FlushError is what http.ResponseController.Flush calls: it reports failures.
func (rec *recorder) FlushError() error {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return http.NewResponseController(rec.ResponseWriter).Flush()
}

// Flush is for wrappers that look for http.Flusher (the gzip writer does).
func (rec *recorder) Flush() { _ = rec.FlushError() }

// Unwrap lets http.ResponseController reach the connection (flush, deadlines).
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// observe writes one access log line and the request metrics for every request,
// and turns a panic into a 500 (or, once the response has begun, an aborted one).
// Headers are never logged, so API keys cannot leak into the log, and of the query
// only the API's own parameters are, with any other value redacted.
func observe(log *slog.Logger, m *Metrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			info := &requestInfo{}
			rec := &recorder{ResponseWriter: w}
			r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info))

			defer func() {
				p := recover()
				aborted := p != nil
				if p != nil && p != http.ErrAbortHandler {
					log.Error("handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
					if rec.status == 0 {
						writeError(rec, http.StatusInternalServerError, apiError{Code: "internal_error", Message: "the backend failed to handle the request"})
						p, aborted = nil, false
					} else {
						p = http.ErrAbortHandler
					}
				}
				status := rec.status
				if status == 0 {
					status = http.StatusOK // nothing written: net/http sends 200
				}
				route, took := routeOf(r), time.Since(start)
				m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
				m.duration.WithLabelValues(route).Observe(took.Seconds())

				attrs := []slog.Attr{
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					slog.String("query", loggableQuery(r.URL.Query())),
					slog.String("route", route),
					slog.Int("status", status),
					slog.Int64("bytes", rec.bytes),
					slog.Float64("duration_ms", float64(took.Microseconds())/1000),
					slog.String("client", middleware.GetClientIP(r.Context())),
					slog.String("user_agent", r.UserAgent()),
				}
				if info.documents > 0 {
					attrs = append(attrs, slog.Int("documents", info.documents))
				}
				if aborted {
					attrs = append(attrs, slog.Bool("aborted", true))
				}
				level := slog.LevelInfo
				if info.err != nil {
					level = slog.LevelWarn
					attrs = append(attrs, slog.String("err", info.err.Error()))
				}
				log.LogAttrs(r.Context(), level, "request", attrs...)
				if p != nil {
					panic(p) // net/http then drops the connection without ending the body
				}
			}()
			next.ServeHTTP(rec, r)
		})
	}
}

// loggableQuery is the query string with the values of unknown parameters replaced,
// in case someone puts a key or other secret where it does not belong, and their
// names shortened, so that a client cannot fill the log.
func loggableQuery(q url.Values) string {
	safe := url.Values{}
	for name, values := range q {
		if slices.Contains(queryParams, name) {
			safe[name] = values
		} else {
			safe[shorten(name, maxEcho)] = []string{"REDACTED"}
		}
	}
	return safe.Encode()
}

// clientIP records the client's address for the rate limit and the access log:
// the peer's, or with trusted proxies, the first untrusted hop of X-Forwarded-For.
func clientIP(trustedProxies []string) func(http.Handler) http.Handler {
	if len(trustedProxies) == 0 {
		return middleware.ClientIPFromRemoteAddr
	}
	return middleware.ClientIPFromXFF(trustedProxies...)
}
