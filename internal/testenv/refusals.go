package testenv

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/annotated-data/pipeline/internal/essecurity"
)

// Run is a binary's run function, called in-process: what main calls with the
// process's arguments, environment and standard output.
type Run func(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error

// Refusal is a start-up a binary must refuse at once, with one error naming the
// problem and no secret in anything it wrote.
type Refusal struct {
	Name string
	Env  map[string]string
	// Want is what each binary's error must say; a binary not listed is not
	// concerned by this case.
	Want map[string]string
	// Patience is how long the refusal may take (default 10s).
	Patience time.Duration
	// Waits says the binary first waits for an unreachable service, logging that
	// once; other refusals must not wait at all.
	Waits   bool
	Secrets []string
}

// Check runs bin in-process with the case's environment (and args) and asserts the
// refusal.
func (r Refusal) Check(t *testing.T, bin string, run Run, args ...string) {
	t.Helper()
	want, concerned := r.Want[bin]
	if !concerned {
		return
	}
	env := map[string]string{"ADMIN_ADDR": FreeAddr(t), "LISTEN_ADDR": FreeAddr(t)}
	for k, v := range r.Env {
		env[k] = v
	}
	patience := r.Patience
	if patience == 0 {
		patience = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience+30*time.Second)
	defer cancel()
	out := &Buffer{}
	began := time.Now()
	err := run(ctx, append([]string{bin}, args...), func(k string) string { return env[k] }, out)
	took := time.Since(began)

	if err == nil {
		t.Fatalf("%s started, want a refusal saying %q; output:\n%s", bin, want, out)
	}
	if took > patience {
		t.Errorf("%s took %s to give up, want at most %s", bin, took.Round(time.Millisecond), patience)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s refused with\n  %v\nwant it to say\n  %s", bin, err, want)
	}
	waited := strings.Contains(out.String(), "not reachable yet; retrying")
	if waited != r.Waits {
		t.Errorf("%s logged waiting for an unreachable service: %v, want %v\n%s", bin, waited, r.Waits, out)
	}
	for _, s := range r.Secrets {
		if s != "" && (strings.Contains(out.String(), s) || strings.Contains(err.Error(), s)) {
			t.Errorf("%s showed a secret in its output or error:\n%v\n%s", bin, err, out)
		}
	}
}

// ElasticsearchRefusals are the ways a node with Elasticsearch's own security
// turns the webserver and the backend away. natsURL is a NATS server the
// webserver reaches first.
func ElasticsearchRefusals(t testing.TB, natsURL string) []Refusal {
	secured := SecuredElasticsearch(t)
	other := NewCA(t, "some other CA")
	wrongPassword := "wrong-pw-" + randomHex(t, 12)
	wrongKey := base64.StdEncoding.EncodeToString([]byte(randomHex(t, 8) + ":" + randomHex(t, 8)))
	dead := "https://" + FreeAddr(t)
	prefix := IndexPrefix(t, secured.AdminURL)
	base := map[string]string{"ELASTICSEARCH_URL": secured.URL, "ES_INDEX_PREFIX": prefix, "NATS_URL": natsURL}
	trusted := WithEnv(base, map[string]string{"ELASTICSEARCH_CA_CERT": secured.CACertFile})
	name, password := secured.User(t, secured.Role(t, essecurity.Role{Cluster: []string{"monitor"}}))
	user := map[string]string{"ELASTICSEARCH_USERNAME": name, "ELASTICSEARCH_PASSWORD": password}
	nobody, nobodyPassword := secured.User(t)
	at := "elasticsearch at " + secured.URL
	both := func(msg string) map[string]string { return map[string]string{"webserver": msg, "backend": msg} }
	secrets := []string{password, nobodyPassword, wrongPassword, wrongKey}
	issuer := fmt.Sprintf("%q", secured.CA.Subject.String())

	cases := []Refusal{
		{Name: "wrong password",
			Env:  WithEnv(trusted, map[string]string{"ELASTICSEARCH_USERNAME": name, "ELASTICSEARCH_PASSWORD": wrongPassword}),
			Want: both(at + ` rejected the credentials of user "` + name + `": check ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD (401 Unauthorized)`)},
		{Name: "wrong API key",
			Env:  WithEnv(trusted, map[string]string{"ELASTICSEARCH_API_KEY": wrongKey}),
			Want: both(at + " rejected the API key in ELASTICSEARCH_API_KEY: it is wrong, expired or invalidated (401 Unauthorized)")},
		{Name: "no credentials",
			Env:  trusted,
			Want: both(at + " requires credentials: set ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD, or ELASTICSEARCH_API_KEY (401 Unauthorized)")},
		{Name: "a user without privileges",
			Env: WithEnv(trusted, map[string]string{"ELASTICSEARCH_USERNAME": nobody, "ELASTICSEARCH_PASSWORD": nobodyPassword}),
			Want: map[string]string{
				"webserver": at + ` does not grant user "` + nobody + `" the cluster privilege monitor (cluster health, at start and for /readyz), ` +
					"the cluster privilege manage_index_templates (installing the index template), the index privilege create_doc on " + prefix + "-* (indexing documents) " +
					"and the index privilege create_index on " + prefix + "-* (creating each day's (or month's) index): give it the role annotations_writer of deploy/elasticsearch-security.json",
				"backend": at + ` does not grant user "` + nobody + `" the cluster privilege monitor (cluster health, at start and for /readyz), ` +
					"the index privilege read on " + prefix + "-* (searching (exports, points in time, counts, audits)) " +
					"and the index privilege maintenance on " + prefix + "-* (follow's refresh before each step): give it the role annotations_reader of deploy/elasticsearch-security.json",
			}},
		{Name: "a user with some privileges",
			Env: WithEnv(trusted, user),
			Want: map[string]string{
				"webserver": at + ` does not grant user "` + name + `" the cluster privilege manage_index_templates (installing the index template), the index privilege create_doc`,
				"backend":   at + ` does not grant user "` + name + `" the index privilege read on ` + prefix + "-*",
			}},
		{Name: "wrong fingerprint",
			Env:  WithEnv(base, WithEnv(user, map[string]string{"ELASTICSEARCH_CA_FINGERPRINT": other.Fingerprint()})),
			Want: both(at + " is not trusted: no certificate it presented has the SHA-256 fingerprint in ELASTICSEARCH_CA_FINGERPRINT")},
		{Name: "a CA that did not sign the certificate",
			Env:  WithEnv(base, WithEnv(user, map[string]string{"ELASTICSEARCH_CA_CERT": other.CertFile})),
			Want: both(at + " is not trusted: its TLS certificate is signed by an unknown authority (" + issuer + "); the CA in ELASTICSEARCH_CA_CERT (" + other.CertFile + ") did not sign it")},
		{Name: "no CA for a private certificate",
			Env:  WithEnv(base, user),
			Want: both(at + " is not trusted: its TLS certificate is signed by an unknown authority (" + issuer + "); set ELASTICSEARCH_CA_CERT")},
		{Name: "unreachable beyond the start-up timeout",
			Env:      WithEnv(trusted, WithEnv(user, map[string]string{"ELASTICSEARCH_URL": dead, "ELASTICSEARCH_STARTUP_TIMEOUT": "3s"})),
			Want:     both("elasticsearch unreachable at " + dead + ": "),
			Patience: 15 * time.Second, Waits: true},
	}
	for i := range cases {
		cases[i].Secrets = secrets
	}
	return cases
}

// NATSRefusals are the ways a NATS server turns the webserver and the publisher
// away.
func NATSRefusals(t testing.TB) []Refusal {
	ca := NewCA(t, "nats test CA")
	other := NewCA(t, "some other CA")
	password, wrongPassword := "nats-pw-"+randomHex(t, 12), "wrong-pw-"+randomHex(t, 12)
	withTLS := func(o *server.Options) {
		o.TLS, o.TLSTimeout = true, 5
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{ca.Issue("nats", "127.0.0.1", "localhost")}, MinVersion: tls.VersionTLS12}
	}
	users := StartNATSWith(t, func(o *server.Options) {
		withTLS(o)
		o.Users = []*server.User{{Username: "pipeline", Password: password}}
	})
	mutual := StartNATSWith(t, func(o *server.Options) {
		withTLS(o)
		o.TLSVerify = true
		o.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
		o.TLSConfig.ClientCAs = ca.Pool()
	})
	operator := NewNATSOperator(t)
	jwtServer := StartNATSWith(t, func(o *server.Options) {
		withTLS(o)
		operator.Configure(o)
	})
	foreignCreds := operator.ForeignCreds("stranger")
	strangerCert, strangerKey := other.WriteKeyPair(other.Issue("stranger", "stranger"))
	both := func(msg string) map[string]string { return map[string]string{"webserver": msg, "publisher": msg} }

	cases := []Refusal{
		{Name: "wrong password",
			Env:  map[string]string{"NATS_URL": users.URL(), "NATS_CA_CERT": ca.CertFile, "NATS_USER": "pipeline", "NATS_PASSWORD": wrongPassword},
			Want: both("nats at " + users.URL() + ` refused the credentials (authorization violation): check NATS_USER ("pipeline") and NATS_PASSWORD`)},
		{Name: "no credentials",
			Env:  map[string]string{"NATS_URL": users.URL(), "NATS_CA_CERT": ca.CertFile},
			Want: both("refused the credentials (authorization violation): the server requires credentials")},
		{Name: "credentials of an account the server does not trust",
			Env:  map[string]string{"NATS_URL": jwtServer.URL(), "NATS_CA_CERT": ca.CertFile, "NATS_CREDS": foreignCreds},
			Want: both("refused the credentials (authorization violation): check NATS_CREDS (" + foreignCreds + ")")},
		{Name: "a CA that did not sign the server's certificate",
			Env:  map[string]string{"NATS_URL": users.URL(), "NATS_CA_CERT": other.CertFile, "NATS_USER": "pipeline", "NATS_PASSWORD": password},
			Want: both(`is not trusted: its TLS certificate is signed by an unknown authority ("CN=nats test CA,O=pipeline tests"); the CA in NATS_CA_CERT (` + other.CertFile + ") did not sign it")},
		{Name: "no CA for a private certificate",
			Env:  map[string]string{"NATS_URL": users.URL(), "NATS_USER": "pipeline", "NATS_PASSWORD": password},
			Want: both("is not trusted: its TLS certificate is signed by an unknown authority (\"CN=nats test CA,O=pipeline tests\"); set NATS_CA_CERT to the CA that signed it")},
		{Name: "no client certificate for a server that requires one",
			Env:  map[string]string{"NATS_URL": mutual.URL(), "NATS_CA_CERT": ca.CertFile},
			Want: both("requires a client certificate (mutual TLS): set NATS_TLS_CERT and NATS_TLS_KEY")},
		{Name: "a client certificate the server does not trust",
			Env:  map[string]string{"NATS_URL": mutual.URL(), "NATS_CA_CERT": ca.CertFile, "NATS_TLS_CERT": strangerCert, "NATS_TLS_KEY": strangerKey},
			Want: both("refused the client certificate in NATS_TLS_CERT (" + strangerCert + ")")},
	}
	for i := range cases {
		cases[i].Secrets = []string{password, wrongPassword}
	}
	return cases
}

// WithEnv is base with extra's variables added or replaced; base is unchanged.
func WithEnv(base, extra map[string]string) map[string]string {
	out := maps.Clone(base)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, extra)
	return out
}
