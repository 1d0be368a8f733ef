//go:build integration

package e2e

import (
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// The test node has no security module; testenv.SecureElasticsearch puts TLS and
// authentication in front of it, as a production cluster has them.

func TestBothBinariesWorkThroughASecuredElasticsearch(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	secured := testenv.StartSecureElasticsearch(t, esURL)
	tests := []struct {
		name               string
		webserver, backend map[string]string
	}{
		{"CA file, username and password",
			map[string]string{"ELASTICSEARCH_CA_CERT": secured.CA.CertFile, "ELASTICSEARCH_USERNAME": secured.Username, "ELASTICSEARCH_PASSWORD_FILE": writeSecret(t, secured.Password)},
			map[string]string{"ELASTICSEARCH_CA_CERT": secured.CA.CertFile, "ELASTICSEARCH_USERNAME": secured.Username, "ELASTICSEARCH_PASSWORD": secured.Password}},
		{"CA fingerprint and API key, compressed bulks",
			map[string]string{"ELASTICSEARCH_CA_FINGERPRINT": secured.CA.Fingerprint(), "ELASTICSEARCH_API_KEY": secured.APIKey, "ELASTICSEARCH_COMPRESS": "true"},
			map[string]string{"ELASTICSEARCH_CA_FINGERPRINT": secured.CA.Fingerprint(), "ELASTICSEARCH_API_KEY_FILE": writeSecret(t, secured.APIKey)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := testenv.IndexPrefix(t, esURL)
			common := map[string]string{"ELASTICSEARCH_URL": secured.URL, "ES_INDEX_PREFIX": prefix}
			outputs := runPipelineThrough(t, esURL, testenv.WithEnv(common, tt.webserver), testenv.WithEnv(common, tt.backend), secureFrames{count: 200})
			assertNoSecrets(t, outputs, secured.Password, secured.APIKey)
		})
	}
}

func TestSeveralElasticsearchAddressesWithOneDeadKeepBothBinariesWorking(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	secured := testenv.StartSecureElasticsearch(t, esURL)
	dead := "https://" + testenv.FreeAddr(t) // nothing listens there
	env := map[string]string{
		"ELASTICSEARCH_URL":      dead + "," + secured.URL,
		"ELASTICSEARCH_CA_CERT":  secured.CA.CertFile,
		"ELASTICSEARCH_USERNAME": secured.Username,
		"ELASTICSEARCH_PASSWORD": secured.Password,
		"ES_INDEX_PREFIX":        testenv.IndexPrefix(t, esURL),
	}
	runPipelineThrough(t, esURL, env, env, secureFrames{count: 500})
}

// runPipelineThrough runs the webserver with webserverEnv against a fresh NATS,
// publishes frames, checks the documents stored, then has the backend with
// backendEnv stream them back. It returns both binaries' output.
func runPipelineThrough(t *testing.T, esURL string, webserverEnv, backendEnv map[string]string, frames secureFrames) map[string]string {
	t.Helper()
	ns := testenv.StartNATS(t)
	ws := startSecureWebserver(t, testenv.WithEnv(webserverEnv, map[string]string{"NATS_URL": ns.URL()}))
	publishFrames(t, map[string]string{"NATS_URL": ns.URL()}, frames)
	want := frames.ids()
	waitForDocuments(t, esURL, webserverEnv["ES_INDEX_PREFIX"], want, 2*time.Minute)

	listen := testenv.FreeAddr(t)
	backend := testenv.StartProcess(t, binary(t, "backend"), testenv.WithEnv(backendEnv, map[string]string{"LISTEN_ADDR": listen}))
	waitReady(t, backend, "backend", "http://"+listen+"/readyz")
	res, err := http.Get("http://" + listen + "/getJsonStream?start_date=2023-03-09T19:40:00Z&end_date=2023-03-10T00:00:00Z")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var docs []sample.Frame
	if err := json.NewDecoder(res.Body).Decode(&docs); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("backend: %s, decode: %v", res.Status, err)
	}
	got := map[string]int{}
	for _, d := range docs {
		got[d.MsgID()]++
	}
	if !maps.Equal(got, want) {
		t.Errorf("the backend streamed other documents than were published: %s", idDiff(got, want))
	}
	return map[string]string{"webserver": ws.Output(), "backend": backend.Output()}
}

func TestSkippingCertificateVerificationIsAnExplicitOptInLoggedAsAWarning(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	secured := testenv.StartSecureElasticsearch(t, esURL)
	listen := testenv.FreeAddr(t)
	backend := testenv.StartProcess(t, binary(t, "backend"), map[string]string{
		"ELASTICSEARCH_URL": secured.URL, "ELASTICSEARCH_USERNAME": secured.Username, "ELASTICSEARCH_PASSWORD": secured.Password,
		"ELASTICSEARCH_INSECURE_SKIP_VERIFY": "true", "ES_INDEX_PREFIX": testenv.IndexPrefix(t, esURL), "LISTEN_ADDR": listen,
	})
	waitReady(t, backend, "backend", "http://"+listen+"/readyz")
	out := backend.Output()
	if !strings.Contains(out, `"level":"WARN","msg":"ELASTICSEARCH_INSECURE_SKIP_VERIFY=true: the Elasticsearch certificate is NOT verified`) {
		t.Errorf("connecting without verification was not logged as a warning:\n%s", out)
	}
	if !strings.Contains(out, `"tls":"NOT VERIFIED"`) {
		t.Errorf("the connection line does not say the certificate is not verified:\n%s", out)
	}
}
