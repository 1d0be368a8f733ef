package api

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

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
