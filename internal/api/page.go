package api

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"mime"
	"net/http"
	"path"
	"time"
)

// The page at / is a small client of the API for people, and the example a
// frontend developer copies: plain files, no build step, nothing fetched from
// elsewhere.
//
//go:embed web
var webFiles embed.FS

// pageCSP replaces the API's "frame-ancestors 'none'" on the page's files, keeping
// it: the page runs only its own script and style. connect-src stays open because
// the page may be pointed at the API of another origin (its API base URL field);
// whether that origin answers is for its CORS_ALLOWED_ORIGINS to say.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src *; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// webPage serves the files of web/ at the root: / is index.html. The page itself
// holds no data, so it needs no API key; the documents it shows come from the
// streams, which do.
func webPage() http.HandlerFunc {
	type file struct {
		body        []byte
		contentType string
		etag        string
	}
	files := map[string]file{}
	entries, _ := webFiles.ReadDir("web") // embedded: it cannot fail
	for _, e := range entries {
		body, _ := webFiles.ReadFile("web/" + e.Name())
		sum := sha256.Sum256(body)
		name := "/" + e.Name()
		if name == "/index.html" {
			name = "/"
		}
		files[name] = file{body: body, contentType: mime.TypeByExtension(path.Ext(e.Name())),
			etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		f, ok := files[r.URL.Path]
		if !ok { // routes.go routes here a path that web/ lacks
			writeError(w, http.StatusNotFound, apiError{Code: "not_found", Message: "no such file: " + shorten(r.URL.Path, maxEcho)})
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.contentType)
		h.Set("Content-Security-Policy", pageCSP)
		// Revalidated on every load (a 304 while unchanged), so that a new backend
		// version never runs with the script of an old one.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	}
}
