//go:build integration

package e2e

import (
	"bufio"
	"crypto/tls"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// natsTLS makes a server require TLS, with a certificate from ca.
func natsTLS(ca *testenv.CA) func(*server.Options) {
	return func(o *server.Options) {
		o.TLS = true
		o.TLSTimeout = 5
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{ca.Issue("nats", "127.0.0.1", "localhost")}, MinVersion: tls.VersionTLS12}
	}
}

// requireClientCertificates makes a TLS server demand client certificates from ca.
func requireClientCertificates(ca *testenv.CA) func(*server.Options) {
	return func(o *server.Options) {
		o.TLSVerify = true
		o.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
		o.TLSConfig.ClientCAs = ca.Pool()
	}
}

func TestWebserverAndPublisherConnectToNATSWithEachAuthenticationMethod(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	ca := testenv.NewCA(t, "nats test CA")
	password, token := randomSecret(t, "nats-pw-"), randomSecret(t, "nats-token-")
	seedFile, nkeyPublic := testenv.NewNKeyUser(t)
	operator := testenv.NewNATSOperator(t)
	credsFile := operator.UserCreds("pipeline")
	clientCert, clientKey := ca.WriteKeyPair(ca.Issue("pipeline-client", "pipeline-client"))
	secrets := []string{password, token, seedIn(t, seedFile), seedIn(t, credsFile)}

	tests := []struct {
		name   string
		server func(*server.Options)
		env    map[string]string
	}{
		{"user and password",
			func(o *server.Options) { o.Users = []*server.User{{Username: "pipeline", Password: password}} },
			map[string]string{"NATS_USER": "pipeline", "NATS_PASSWORD": password}},
		{"NKey seed",
			func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: nkeyPublic}} },
			map[string]string{"NATS_NKEY_SEED": seedFile}},
		{"token from a file",
			func(o *server.Options) { o.Authorization = token },
			map[string]string{"NATS_TOKEN_FILE": writeSecret(t, token)}},
		{"JWT credentials file",
			operator.Configure,
			map[string]string{"NATS_CREDS": credsFile}},
		{"client certificate (mutual TLS)",
			requireClientCertificates(ca),
			map[string]string{"NATS_TLS_CERT": clientCert, "NATS_TLS_KEY": clientKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := testenv.StartNATSWith(t, func(o *server.Options) {
				natsTLS(ca)(o)
				tt.server(o)
			})
			natsEnv := testenv.WithEnv(map[string]string{"NATS_URL": ns.URL(), "NATS_CA_CERT": ca.CertFile}, tt.env)
			prefix := testenv.IndexPrefix(t, esURL)
			ws := startSecureWebserver(t, testenv.WithEnv(natsEnv, map[string]string{"ELASTICSEARCH_URL": esURL, "ES_INDEX_PREFIX": prefix}))

			frames := secureFrames{count: 300}
			out := publishFrames(t, natsEnv, frames)
			waitForDocuments(t, esURL, prefix, frames.ids(), 2*time.Minute)

			if !strings.Contains(ws.Output(), `"msg":"nats connected"`) || !strings.Contains(ws.Output(), `"tls":true`) {
				t.Errorf("the webserver did not log its TLS connection to NATS:\n%s", ws.Output())
			}
			if !strings.Contains(out, "300 stored") {
				t.Errorf("the publisher did not report 300 frames stored:\n%s", out)
			}
			assertNoSecrets(t, map[string]string{"webserver": ws.Output(), "publisher": out}, secrets...)
		})
	}
}

// Losing one server of three keeps JetStream's majority: streams created with
// NATS_STREAM_REPLICAS=3 stay writable and readable, and the webserver moves to
// another server. (Of two servers, neither alone would be a majority.)
func TestWebserverKeepsIngestingWhenItsNATSClusterServerIsLost(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	servers := testenv.StartNATSCluster(t, 3, nil)
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.URL())
	}
	prefix := testenv.IndexPrefix(t, esURL)
	ws := startSecureWebserver(t, map[string]string{
		"NATS_URL": strings.Join(urls, ","), "NATS_STREAM_REPLICAS": "3",
		"ELASTICSEARCH_URL": esURL, "ES_INDEX_PREFIX": prefix,
	})
	var lost, survivor *testenv.NATS
	for _, s := range servers {
		if s.HasClient("webserver") {
			lost = s
		} else {
			survivor = s
		}
	}
	if lost == nil {
		t.Fatal("no server has the webserver's connection")
	}

	publishFrames(t, map[string]string{"NATS_URL": survivor.URL()}, secureFrames{count: 300})
	lost.Stop()
	// The first 300 frames again and 300 more: the stream, which lost a replica, must
	// still know the first ones.
	out := publishFrames(t, map[string]string{"NATS_URL": survivor.URL()}, secureFrames{count: 600})
	if !strings.Contains(out, "300 stored, 300 already in the stream") {
		t.Errorf("after losing %s, the stream did not recognise the frames stored before:\n%s", lost.Name(), out)
	}
	waitForDocuments(t, esURL, prefix, secureFrames{count: 600}.ids(), 2*time.Minute)
	if o := ws.Output(); !strings.Contains(o, "nats disconnected") || !strings.Contains(o, "nats reconnected") {
		t.Errorf("the webserver did not log moving to another server:\n%s", o)
	}
}

// seedIn returns the NKey seed in a seed or .creds file: the secret in it.
func seedIn(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "SU") {
			return line
		}
	}
	t.Fatalf("no user seed in %s", file)
	return ""
}
