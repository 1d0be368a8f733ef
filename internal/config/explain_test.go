package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/dial"
	"github.com/annotated-data/pipeline/internal/natsconn"
	"github.com/annotated-data/pipeline/internal/store"
)

// The adapters report what went wrong; the configuration says which variable
// fixes it. These are the words an operator reads when a binary refuses to start.
func TestConnectionFailuresAreExplainedByTheVariablesThatFixThem(t *testing.T) {
	at := "https://es:9200"
	es := func(cfg store.Config) Elasticsearch { return Elasticsearch{Config: cfg} }
	tests := []struct {
		name    string
		explain func(error) error
		err     error
		want    string
	}{
		{"elasticsearch refused a password", es(store.Config{Username: "ingest", Password: "pw"}).Explain,
			&dial.RefusedError{Service: "elasticsearch", Addr: at, Why: "401 Unauthorized"},
			`elasticsearch at https://es:9200 rejected the credentials of user "ingest": check ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD (401 Unauthorized)`},
		{"elasticsearch refused an API key", es(store.Config{APIKey: "k"}).Explain,
			&dial.RefusedError{Service: "elasticsearch", Addr: at, Why: "401 Unauthorized"},
			"elasticsearch at https://es:9200 rejected the API key in ELASTICSEARCH_API_KEY: it is wrong, expired or invalidated (401 Unauthorized)"},
		{"elasticsearch wants credentials", es(store.Config{}).Explain,
			&dial.RefusedError{Service: "elasticsearch", Addr: at, Why: "401 Unauthorized"},
			"requires credentials: set ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD, or ELASTICSEARCH_API_KEY"},
		{"elasticsearch signed by another CA", es(store.Config{CACertFile: "/etc/ca.pem"}).Explain,
			&dial.UntrustedError{Service: "elasticsearch", Addr: at, Problem: dial.UnknownAuthority, Issuer: "CN=other"},
			`elasticsearch at https://es:9200 is not trusted: its TLS certificate is signed by an unknown authority ("CN=other"); the CA in ELASTICSEARCH_CA_CERT (/etc/ca.pem) did not sign it`},
		{"elasticsearch with a private CA", es(store.Config{}).Explain,
			&dial.UntrustedError{Service: "elasticsearch", Addr: at, Problem: dial.UnknownAuthority, Issuer: "CN=other"},
			"; set ELASTICSEARCH_CA_CERT to the CA that signed it"},
		{"elasticsearch with another fingerprint", es(store.Config{CAFingerprint: "ab12"}).Explain,
			&dial.UntrustedError{Service: "elasticsearch", Addr: at, Problem: dial.FingerprintMismatch},
			"no certificate it presented has the SHA-256 fingerprint in ELASTICSEARCH_CA_FINGERPRINT (ab12)"},
		{"elasticsearch never came up", es(store.Config{}).Explain,
			&dial.GaveUpError{After: 61 * time.Second, Err: errors.New("elasticsearch unreachable at http://es:9200: connection refused")},
			"elasticsearch unreachable at http://es:9200: connection refused (gave up after 1m1s, ELASTICSEARCH_STARTUP_TIMEOUT)"},
		{"nats refused a password", NATS{Config: natsconn.Config{User: "ingest"}}.Explain,
			&dial.RefusedError{Service: "nats", Addr: "nats://n:4222", Why: "authorization violation"},
			`nats at nats://n:4222 refused the credentials (authorization violation): check NATS_USER ("ingest") and NATS_PASSWORD`},
		{"nats refused expired credentials", NATS{Config: natsconn.Config{CredsFile: "/c"}}.Explain,
			&dial.RefusedError{Service: "nats", Addr: "nats://n:4222", Auth: "creds file /c", Why: "expired"},
			"nats at nats://n:4222 refused the credentials: they have expired (creds file /c)"},
		{"nats wants a client certificate", NATS{}.Explain,
			&natsconn.ClientCertError{Addr: "tls://n:4222", Err: errors.New("certificate required")},
			"requires a client certificate (mutual TLS): set NATS_TLS_CERT and NATS_TLS_KEY"},
		{"nats refused a client certificate", NATS{Config: natsconn.Config{CertFile: "/me.pem"}}.Explain,
			&natsconn.ClientCertError{Addr: "tls://n:4222", CertFile: "/me.pem", Err: errors.New("bad certificate")},
			"refused the client certificate in NATS_TLS_CERT (/me.pem): it must be signed by a CA the server trusts"},
		{"nats without TLS", NATS{Config: natsconn.Config{URLs: []string{"nats://n:4222"}}}.Explain,
			natsconn.ErrNoTLS, "nats at nats://n:4222 does not offer TLS, but NATS_CA_CERT or NATS_TLS_CERT ask for it"},
		{"nats never came up", NATS{}.Explain,
			&dial.GaveUpError{After: 3 * time.Second, Err: errors.New("nats unreachable")}, "nats unreachable (gave up after 3s, NATS_STARTUP_TIMEOUT)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.explain(tt.err).Error(); !strings.Contains(got, tt.want) {
				t.Errorf("got  %q\nwant it to say %q", got, tt.want)
			}
		})
	}
	other := errors.New("something else")
	if got := (Elasticsearch{}).Explain(other); got != other {
		t.Errorf("Explain changed an error it has nothing to add to: %v", got)
	}
}
