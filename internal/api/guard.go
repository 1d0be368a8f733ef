package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/go-chi/httprate"
)

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
