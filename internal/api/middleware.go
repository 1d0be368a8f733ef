package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/go-chi/cors"
	"github.com/go-chi/httprate"
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

// maxEcho is the most of a client's text (a parameter name, a path) that an
// error message or a log line repeats.
const maxEcho = 64

// shorten returns s cut to at most n bytes, without splitting a character, and
// marked as cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// normalizePath routes a path whose percent-encodings stand for unreserved
// characters (/get%4AsonStream) as the path itself, as RFC 3986 (6.2.2.2) says
// they are equivalent. An encoded reserved character (%2F) keeps the path apart.
func normalizePath(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawPath != "" {
			raw := decodeUnreserved(r.URL.RawPath)
			if raw == (&url.URL{Path: r.URL.Path}).EscapedPath() {
				raw = "" // the router then matches the decoded path
			}
			r.URL.RawPath = raw
		}
		next.ServeHTTP(w, r)
	})
}

// decodeUnreserved decodes the percent-encodings of letters, digits and - . _ ~
// in an escaped path, and leaves every other one as it is.
func decodeUnreserved(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			if v, err := strconv.ParseUint(p[i+1:i+3], 16, 8); err == nil {
				c := byte(v)
				if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
					b.WriteByte(c)
					i += 2
					continue
				}
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// SecurityHeaders sets the headers OWASP recommends for a JSON API on every
// response, errors included; and HSTS when the backend itself serves TLS. The API
// applies it to its routes; the backend also wraps its plain-HTTP ACME listener.
func SecurityHeaders(hsts bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("X-Frame-Options", "DENY")
			h.Set("Content-Security-Policy", "frame-ancestors 'none'")
			h.Set("Referrer-Policy", "no-referrer")
			if hsts {
				h.Set("Strict-Transport-Security", "max-age=31536000")
			}
			next.ServeHTTP(w, r)
		})
	}
}

// MaxHeaderBytes is the most a request's line and headers may take. The server
// must let larger ones through (its MaxHeaderBytes above this), for the API to
// answer them itself, with the headers every response carries.
const MaxHeaderBytes = 64 << 10

// limitHeaderBytes answers 431 to a request whose line and headers, counted as
// they are sent over HTTP/1.1, take more than n bytes.
func limitHeaderBytes(n int) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			size := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4 + len("Host: \r\n") + len(r.Host) + 2
			for name, values := range r.Header {
				for _, v := range values {
					size += len(name) + len(v) + 4
				}
			}
			if size > n {
				w.Header().Set("Connection", "close")
				writeError(w, http.StatusRequestHeaderFieldsTooLarge, apiError{Code: "headers_too_large",
					Message: fmt.Sprintf("the request line and headers take %d bytes; at most %d are read", size, n)})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// clientIP records the client's address for the rate limit and the access log:
// the peer's, or with trusted proxies, the first untrusted hop of X-Forwarded-For.
func clientIP(trustedProxies []string) func(http.Handler) http.Handler {
	if len(trustedProxies) == 0 {
		return middleware.ClientIPFromRemoteAddr
	}
	return middleware.ClientIPFromXFF(trustedProxies...)
}

// allowOrigins lets the pages of the given origins call the API from a browser.
func allowOrigins(origins []string) func(http.Handler) http.Handler {
	if len(origins) == 0 {
		return passThrough
	}
	return cors.Handler(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: []string{http.MethodGet, http.MethodHead},
		AllowedHeaders: []string{"Accept", "Authorization", "X-API-Key", "Last-Event-ID"},
		ExposedHeaders: []string{"Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", unknownFieldsHeader, warningHeader},
		MaxAge:         600,
	})
}

// rateLimit allows each client limit requests per window; 0 turns it off.
func rateLimit(limit int, window time.Duration) func(http.Handler) http.Handler {
	if limit == 0 {
		return passThrough
	}
	// A counter of our own keeps the windows aligned to the clock, so that the
	// limit handler can read where the client stands.
	counter := httprate.NewLocalLimitCounter(window)
	limiter := httprate.NewRateLimiter(limit, window, httprate.WithLimitCounter(counter), httprate.WithLimitHandler(func(w http.ResponseWriter, r *http.Request) {
		// httprate's own Retry-After is always the whole window.
		now := time.Now().UTC()
		current := now.Truncate(window)
		wait := window
		if curr, prev, err := counter.Get(clientKey(r), current, current.Add(-window)); err == nil {
			wait = untilAllowed(now.Sub(current), window, prev, curr, limit)
		}
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
		writeError(w, http.StatusTooManyRequests, apiError{Code: "rate_limited",
			Message: fmt.Sprintf("more than %d requests in %s from this client; retry after the seconds in Retry-After", limit, window)})
	}))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !limiter.RespondOnLimit(w, r, clientKey(r)) {
				next.ServeHTTP(w, r)
			}
		})
	}
}

// untilAllowed is how long a client must wait before httprate admits its next
// request. httprate estimates a client's rate over a sliding window as
// prev*(1-elapsed/window) + curr, from the requests counted in the previous and
// the current fixed window, and admits a request while the estimate stays below
// limit. Within the current window the estimate falls as prev's share fades;
// failing that, in the next window curr becomes the fading share.
func untilAllowed(elapsed, window time.Duration, prev, curr, limit int) time.Duration {
	room := limit - 1 // the estimate at which one more request fits
	// ceilShare is window*num/den, rounded up: the earliest instant that is enough.
	ceilShare := func(num, den int) time.Duration {
		return (window*time.Duration(num) + time.Duration(den) - 1) / time.Duration(den)
	}
	if curr <= room {
		if prev == 0 {
			return 0
		}
		// prev*(1-e/window) + curr <= room
		if e := ceilShare(prev-(room-curr), prev); e < window {
			return max(0, e-elapsed)
		}
	}
	// Next window: curr*(1-e/window) <= room.
	return window - elapsed + ceilShare(max(0, curr-room), curr)
}

// clientKey names the client for the per-client limits: its address, or its /64
// for IPv6, where one host commonly holds a whole prefix.
func clientKey(r *http.Request) string {
	return httprate.CanonicalizeIP(middleware.GetClientIP(r.Context()))
}

// requireAPIKey admits requests that present one of keys, as "Authorization: Bearer
// <key>" or "X-API-Key: <key>". With no keys configured, it admits everything.
func requireAPIKey(keys []string) func(http.Handler) http.Handler {
	if len(keys) == 0 {
		return passThrough
	}
	// Comparing digests makes every comparison the same length, so neither a key's
	// length nor how much of it matched shows in the time an answer takes.
	digests := make([][sha256.Size]byte, len(keys))
	for i, k := range keys {
		digests[i] = sha256.Sum256([]byte(k))
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			presented := sha256.Sum256([]byte(presentedKey(r)))
			match := 0
			for _, d := range digests { // no early exit: which key matched must not show either
				match |= subtle.ConstantTimeCompare(presented[:], d[:])
			}
			if match != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="annotations"`)
				writeError(w, http.StatusUnauthorized, apiError{Code: "unauthorized",
					Message: "a valid API key is required: send Authorization: Bearer <key> or X-API-Key: <key>"})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func presentedKey(r *http.Request) string {
	if k := r.Header.Get("X-API-Key"); k != "" {
		return k
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(token)
	}
	return ""
}

func passThrough(next http.Handler) http.Handler { return next }
