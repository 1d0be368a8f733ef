package api

import (
	"net/http"

	"github.com/go-chi/cors"
)

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
