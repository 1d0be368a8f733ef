package api

import (
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestThePageIsServedWithoutAKey(t *testing.T) {
	v := newSpecValidator(t)
	srv, _ := serve(t, &fakeExporter{}, Config{APIKeys: []string{"a-key-of-sixteen-chars-or-more"}})
	for path, want := range map[string]struct{ contentType, contains string }{
		"/":        {"text/html; charset=utf-8", `<script src="app.js" defer></script>`},
		"/app.js":  {"text/javascript; charset=utf-8", "Last-Event-ID"},
		"/app.css": {"text/css; charset=utf-8", "#chart"},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		res := get(t, srv.URL+path)
		body, _ := io.ReadAll(res.Body)
		v.check(t, req, res, body)
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != want.contentType || !strings.Contains(string(body), want.contains) {
			t.Errorf("%s: %d %s, want 200 %s with %q", path, res.StatusCode, res.Header.Get("Content-Type"), want.contentType, want.contains)
		}
	}
	// The documents the page shows still need the key.
	if res := get(t, srv.URL+"/getStream"+someRange); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("/getStream without a key: %d, want 401", res.StatusCode)
	}
}

// A page whose API calls are refused by the rate limit must still load, to say
// so: its own files, held in memory, do not count against the limit; the API
// behind it still does.
func TestThePagesOwnFilesDoNotCountAgainstTheRateLimit(t *testing.T) {
	srv, _ := serve(t, &fakeExporter{}, Config{RateLimit: 2})
	for range 3 {
		for _, path := range []string{"/", "/app.js", "/app.css"} {
			if res := get(t, srv.URL+path); res.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d, want 200 however often the page is loaded", path, res.StatusCode)
			}
		}
	}
	var statuses []int
	for range 3 {
		statuses = append(statuses, get(t, srv.URL+"/getCounts"+someRange).StatusCode)
	}
	if !slices.Equal(statuses, []int{http.StatusOK, http.StatusOK, http.StatusTooManyRequests}) {
		t.Errorf("getCounts statuses = %v, want [200 200 429]", statuses)
	}
}

// The page keeps every header of the API, with a Content-Security-Policy that
// also lets it run nothing but its own files; it must therefore hold no inline
// script or style, and fetch nothing from elsewhere (no CDN, no fonts).
func TestThePageRunsUnderAStrictContentSecurityPolicy(t *testing.T) {
	srv, _ := serve(t, &fakeExporter{}, Config{HSTS: true})
	for _, path := range []string{"/", "/app.js", "/app.css"} {
		res := get(t, srv.URL+path)
		for name, value := range map[string]string{
			"X-Content-Type-Options":    "nosniff",
			"X-Frame-Options":           "DENY",
			"Referrer-Policy":           "no-referrer",
			"Strict-Transport-Security": "max-age=31536000",
			"Content-Security-Policy":   pageCSP,
		} {
			if got := res.Header.Get(name); got != value {
				t.Errorf("%s: %s = %q, want %q", path, name, got, value)
			}
		}
	}
	for _, directive := range []string{"frame-ancestors 'none'", "script-src 'self'", "style-src 'self'"} {
		if !strings.Contains(pageCSP, directive) {
			t.Errorf("the page's policy lacks %s", directive)
		}
	}

	html, _ := webFiles.ReadFile("web/index.html")
	for _, script := range regexp.MustCompile(`<script[^>]*>[^<]*</script>`).FindAll(html, -1) {
		if !regexp.MustCompile(`^<script src="[^"]+"[^>]*></script>$`).Match(script) {
			t.Errorf("index.html has an inline script: %q", script)
		}
	}
	for what, pattern := range map[string]string{
		"a style element":          `<style`,
		"a style attribute":        `\sstyle=`,
		"an event attribute":       `\son[a-z]+=`,
		"a file from another site": `(src|href)="(https?:)?//`,
	} {
		if m := regexp.MustCompile(pattern).Find(html); m != nil {
			t.Errorf("index.html has %s: %q", what, m)
		}
	}
	css, _ := webFiles.ReadFile("web/app.css")
	if m := regexp.MustCompile(`@import|url\(`).Find(css); m != nil {
		t.Errorf("app.css loads something: %q", m)
	}
}

func TestThePageIsRevalidatedByItsETag(t *testing.T) {
	srv, _ := serve(t, &fakeExporter{}, Config{})
	first := get(t, srv.URL+"/app.js")
	etag := first.Header.Get("ETag")
	if first.Header.Get("Cache-Control") != "no-cache" || etag == "" {
		t.Fatalf("Cache-Control %q, ETag %q: want no-cache and an ETag", first.Header.Get("Cache-Control"), etag)
	}
	if again := get(t, srv.URL+"/app.js", "If-None-Match", etag); again.StatusCode != http.StatusNotModified {
		t.Errorf("with If-None-Match: %d, want 304", again.StatusCode)
	}
	if other := get(t, srv.URL+"/app.css", "If-None-Match", etag); other.StatusCode != http.StatusOK {
		t.Errorf("another file with that ETag: %d, want 200", other.StatusCode)
	}
}
