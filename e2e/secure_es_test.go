//go:build integration

package e2e

import (
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/essecurity"
	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// These run against the node with Elasticsearch's own security that `make test`
// starts (testenv.SecuredElasticsearch), each binary as the user or API key that
// deploy/elasticsearch-security.json gives it: its least-privilege role.

// securedAccounts applies deploy/elasticsearch-security.json for one test, with
// an API key added for each binary, and returns the node, the test's index
// prefix and the accounts.
func securedAccounts(t *testing.T) (*testenv.Secured, string, testenv.Accounts) {
	t.Helper()
	secured := testenv.SecuredElasticsearch(t)
	prefix := testenv.IndexPrefix(t, secured.AdminURL)
	file, err := essecurity.Load("../deploy/elasticsearch-security.json", prefix)
	if err != nil {
		t.Fatal(err)
	}
	file.APIKeys = map[string]essecurity.APIKey{
		"webserver": {Roles: file.Users["webserver"].Roles, Secret: "webserver_key"},
		"backend":   {Roles: file.Users["backend"].Roles, Secret: "backend_key"},
	}
	return secured, prefix, secured.Apply(t, file)
}

func TestBothBinariesWorkThroughASecuredElasticsearch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name               string
		webserver, backend func(*testenv.Secured, testenv.Accounts) map[string]string
	}{
		{"CA file, username and password",
			func(s *testenv.Secured, a testenv.Accounts) map[string]string {
				return map[string]string{"ELASTICSEARCH_CA_CERT": s.CACertFile, "ELASTICSEARCH_USERNAME": a.Names["webserver"], "ELASTICSEARCH_PASSWORD_FILE": writeSecret(t, a.Passwords["webserver"])}
			},
			func(s *testenv.Secured, a testenv.Accounts) map[string]string {
				return testenv.WithEnv(a.Env("backend"), map[string]string{"ELASTICSEARCH_CA_CERT": s.CACertFile})
			}},
		{"CA fingerprint and API key, compressed bulks",
			func(s *testenv.Secured, a testenv.Accounts) map[string]string {
				return map[string]string{"ELASTICSEARCH_CA_FINGERPRINT": s.Fingerprint(), "ELASTICSEARCH_API_KEY": a.APIKeys["webserver"], "ELASTICSEARCH_COMPRESS": "true"}
			},
			func(s *testenv.Secured, a testenv.Accounts) map[string]string {
				return map[string]string{"ELASTICSEARCH_CA_FINGERPRINT": s.Fingerprint(), "ELASTICSEARCH_API_KEY_FILE": writeSecret(t, a.APIKeys["backend"])}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secured, prefix, accounts := securedAccounts(t)
			common := map[string]string{"ELASTICSEARCH_URL": secured.URL, "ES_INDEX_PREFIX": prefix}
			webserver, backend := tt.webserver(secured, accounts), tt.backend(secured, accounts)
			outputs := runPipelineThrough(t, secured.AdminURL, testenv.WithEnv(common, webserver), testenv.WithEnv(common, backend), secureFrames{count: 200})
			assertNoSecrets(t, outputs, accounts.Passwords["webserver"], accounts.Passwords["backend"], accounts.APIKeys["webserver"], accounts.APIKeys["backend"])
		})
	}
}

func TestSeveralElasticsearchAddressesWithOneDeadKeepBothBinariesWorking(t *testing.T) {
	t.Parallel()
	secured, prefix, accounts := securedAccounts(t)
	dead := "https://" + testenv.FreeAddr(t) // nothing listens there
	env := map[string]string{
		"ELASTICSEARCH_URL":     dead + "," + secured.URL,
		"ELASTICSEARCH_CA_CERT": secured.CACertFile,
		"ES_INDEX_PREFIX":       prefix,
	}
	runPipelineThrough(t, secured.AdminURL, testenv.WithEnv(env, accounts.Env("webserver")), testenv.WithEnv(env, accounts.Env("backend")), secureFrames{count: 500})
}

// runPipelineThrough runs the webserver with webserverEnv against a fresh NATS,
// publishes frames, checks the documents stored, then has the backend with
// backendEnv stream them back. It returns both binaries' output.
func runPipelineThrough(t *testing.T, esURL string, webserverEnv, backendEnv map[string]string, frames secureFrames) map[string]string {
	t.Helper()
	ns := startNATS(t)
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
	secured, prefix, accounts := securedAccounts(t)
	listen := testenv.FreeAddr(t)
	backend := testenv.StartProcess(t, binary(t, "backend"), testenv.WithEnv(accounts.Env("backend"), map[string]string{
		"ELASTICSEARCH_URL": secured.URL, "ELASTICSEARCH_INSECURE_SKIP_VERIFY": "true", "ES_INDEX_PREFIX": prefix, "LISTEN_ADDR": listen,
	}))
	waitReady(t, backend, "backend", "http://"+listen+"/readyz")
	out := backend.Output()
	if !strings.Contains(out, `"level":"WARN","msg":"ELASTICSEARCH_INSECURE_SKIP_VERIFY=true: the Elasticsearch certificate is NOT verified`) {
		t.Errorf("connecting without verification was not logged as a warning:\n%s", out)
	}
	if !strings.Contains(out, `"tls":"NOT VERIFIED"`) {
		t.Errorf("the connection line does not say the certificate is not verified:\n%s", out)
	}
}
