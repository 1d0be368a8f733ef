package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthyPlainAndTLSServicesPassAndOthersFail(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"status":"ok"}`) })
	plain := httptest.NewServer(ok)
	defer plain.Close()
	secure := httptest.NewTLSServer(ok)
	defer secure.Close()
	// Like the backend's autocert mode: no certificate for a handshake without a name.
	named := httptest.NewUnstartedServer(ok)
	named.StartTLS()
	defer named.Close()
	cert := named.TLS.Certificates[0]
	named.TLS.Certificates = nil
	named.TLS.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if hello.ServerName != "api.example.com" {
			return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
		}
		return &cert, nil
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer down.Close()

	tests := []struct {
		name string
		args []string
		ok   bool
	}{
		{"plain HTTP", []string{plain.URL + "/healthz"}, true},
		{"TLS probed with http:// and --insecure", []string{"--insecure", "http://" + strings.TrimPrefix(secure.URL, "https://") + "/healthz"}, true},
		{"TLS with an untrusted certificate", []string{"http://" + strings.TrimPrefix(secure.URL, "https://") + "/healthz"}, false},
		{"TLS that needs a server name, given one", []string{"--insecure", "--server-name", "api.example.com", "http://" + strings.TrimPrefix(named.URL, "https://") + "/healthz"}, true},
		{"TLS that needs a server name, given none", []string{"--insecure", "--server-name", "", "http://" + strings.TrimPrefix(named.URL, "https://") + "/healthz"}, false},
		{"a 503", []string{down.URL + "/healthz"}, false},
		{"nothing listening", []string{"http://127.0.0.1:1/healthz"}, false},
	}
	for _, tt := range tests {
		err := run(context.Background(), append([]string{"healthcheck"}, tt.args...), io.Discard)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}
