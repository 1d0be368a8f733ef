//go:build integration

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/essecurity"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// Credentials revoked while the backend runs: Elasticsearch answers its requests
// 401, and the backend counts them as refused, apart from other failures, for
// ElasticsearchRefusesBackend.
func TestRequestsRefusedAfterTheStartAreCountedAsRefused(t *testing.T) {
	t.Parallel()
	es := testenv.SecuredElasticsearch(t)
	prefix := fmt.Sprintf("refused-%d", time.Now().UnixNano())
	role := es.Role(t, essecurity.Role{Cluster: []string{"monitor"},
		Indices: []essecurity.IndexPrivileges{{Names: []string{prefix + "-*"}, Privileges: []string{"read", "maintenance"}}}})
	user, password := es.User(t, role)
	listen := testenv.FreeAddr(t)
	env := map[string]string{"ELASTICSEARCH_URL": es.URL, "ELASTICSEARCH_CA_CERT": es.CACertFile,
		"ELASTICSEARCH_USERNAME": user, "ELASTICSEARCH_PASSWORD": password, "ES_INDEX_PREFIX": prefix, "LISTEN_ADDR": listen}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { run(ctx, []string{"backend"}, func(k string) string { return env[k] }, &testenv.Buffer{}) })
	t.Cleanup(func() { stop(); wg.Wait() })
	base := "http://" + listen
	testenv.WaitHTTP(t, base+"/healthz", 30*time.Second)

	// The user's password is changed behind the backend's back.
	if code, body := es.Do(t, es.Superuser(), http.MethodPost, "/_security/user/"+user+"/_password",
		map[string]any{"password": "another-" + password}); code != http.StatusOK {
		t.Fatalf("change the backend's password: %d %s", code, body)
	}
	res, err := http.Get(base + "/getJsonStream?start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode < 500 {
		t.Errorf("a stream with the credentials refused: %s, want a 5xx", res.Status)
	}

	res, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`backend_elasticsearch_request_failures_total{cause="refused",operation="open_pit"} 1`,
		`backend_elasticsearch_request_failures_total{cause="error",operation="open_pit"} 0`,
	} {
		if !strings.Contains(string(metrics), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
