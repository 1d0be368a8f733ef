package testenv

import (
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// SecureElasticsearch is a TLS-terminating reverse proxy in front of the test node,
// which has no security module, that behaves like a secured Elasticsearch 8 at
// the door: HTTPS with a certificate from its own CA, and every request must carry
// the basic-auth credentials or the API key below, else it is answered 401 with
// Elasticsearch's JSON error. The limited user authenticates but is refused
// everything with 403, like a user without privileges. Accepted requests go to the
// real node, whose answers (X-Elastic-Product header included) come back as they are.
type SecureElasticsearch struct {
	// URL is the proxy's https:// address.
	URL string
	// CA signed the proxy's certificate; its CertFile and Fingerprint are what
	// clients trust.
	CA *CA

	Username, Password string
	// APIKey is the "encoded" form: base64 of id:key.
	APIKey                           string
	LimitedUsername, LimitedPassword string

	target *url.URL
	proxy  *httputil.ReverseProxy
}

// StartSecureElasticsearch starts the proxy in front of esURL with fresh random
// credentials. It stops when the test ends.
func StartSecureElasticsearch(t testing.TB, esURL string) *SecureElasticsearch {
	t.Helper()
	target, err := url.Parse(esURL)
	if err != nil {
		t.Fatalf("elasticsearch URL %q: %v", esURL, err)
	}
	s := &SecureElasticsearch{
		CA:              NewCA(t, "secure elasticsearch test CA"),
		Username:        "pipeline",
		Password:        "pw-" + randomHex(t, 12),
		APIKey:          base64.StdEncoding.EncodeToString([]byte(randomHex(t, 10) + ":" + randomHex(t, 11))),
		LimitedUsername: "nobody",
		LimitedPassword: "pw-" + randomHex(t, 12),
		target:          target,
	}
	s.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Header.Del("Authorization") // the node has no security to show it to
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := httptest.NewUnstartedServer(s)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{s.CA.Issue("elasticsearch", "127.0.0.1", "localhost")}}
	// Clients that refuse the certificate make the server log handshake errors:
	// expected here, noise in the test output.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// ServeHTTP lets in what authenticates as the full user or with the API key,
// refuses the limited user with 403, and everything else with 401.
func (s *SecureElasticsearch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	user, password, basic := r.BasicAuth()
	// Elasticsearch takes the scheme in any case; go-elasticsearch sends "APIKey".
	scheme, key, _ := strings.Cut(auth, " ")
	isKey := strings.EqualFold(scheme, "ApiKey")
	switch {
	case isKey && equal(key, s.APIKey), basic && user == s.Username && equal(password, s.Password):
		s.proxy.ServeHTTP(w, r)
	case basic && user == s.LimitedUsername && equal(password, s.LimitedPassword):
		esError(w, http.StatusForbidden, fmt.Sprintf("action [%s %s] is unauthorized for user [%s] with effective roles [], this action is granted by the privileges [all]", r.Method, r.URL.Path, user))
	case auth == "":
		unauthorized(w, fmt.Sprintf("missing authentication credentials for REST request [%s]", r.URL.Path))
	case basic:
		unauthorized(w, fmt.Sprintf("unable to authenticate user [%s] for REST request [%s]", user, r.URL.Path))
	default:
		unauthorized(w, "unable to authenticate with provided credentials and anonymous access is not allowed for this request")
	}
}

func unauthorized(w http.ResponseWriter, reason string) {
	w.Header()["Www-Authenticate"] = []string{`Basic realm="security", charset="UTF-8"`, `ApiKey`}
	esError(w, http.StatusUnauthorized, reason)
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// esError answers like Elasticsearch's security layer.
func esError(w http.ResponseWriter, status int, reason string) {
	cause := map[string]any{"type": "security_exception", "reason": reason}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"error":  map[string]any{"root_cause": []any{cause}, "type": "security_exception", "reason": reason},
		"status": status,
	})
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
