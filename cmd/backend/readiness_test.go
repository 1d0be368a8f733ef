//go:build integration

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// The backend is ready while its indices are green or yellow (saying yellow is
// degraded), and not while one is red: every stream reads all of them, so none
// could be served. Its metrics say which, for the ElasticsearchIndicesRed alert.
func TestTheBackendIsNotReadyWhileAnIndexOfItsPrefixIsRed(t *testing.T) {
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	listen := testenv.FreeAddr(t)
	env := map[string]string{"ELASTICSEARCH_URL": esURL, "ES_INDEX_PREFIX": prefix, "LISTEN_ADDR": listen}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { run(ctx, []string{"backend"}, func(k string) string { return env[k] }, &testenv.Buffer{}) })
	t.Cleanup(func() { stop(); wg.Wait() })
	base := "http://" + listen
	testenv.WaitHTTP(t, base+"/healthz", 30*time.Second)

	probe := func() (int, string, string) {
		res, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Error    struct{ Code string } `json:"error"`
			Degraded map[string]string     `json:"degraded"`
		}
		json.NewDecoder(res.Body).Decode(&body)
		if body.Degraded["elasticsearch"] != "" {
			body.Error.Code = "degraded"
		}
		res.Body.Close()
		ready := res.StatusCode
		res, err = http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(res.Body)
		res.Body.Close()
		gauge := ""
		for line := range strings.Lines(string(metrics)) {
			if strings.HasPrefix(line, "backend_elasticsearch_cluster_status ") {
				gauge = strings.TrimSpace(line)
			}
		}
		return ready, body.Error.Code, gauge
	}

	if status, code, gauge := probe(); status != http.StatusOK || code != "" || gauge != "backend_elasticsearch_cluster_status 0" {
		t.Errorf("no index yet: /readyz %d %s, %q; want 200 and status 0 (green)", status, code, gauge)
	}
	// One node cannot hold a replica: yellow.
	yellow := esURL + "/" + prefix + "-2023.03.08"
	testenv.ESJSON(t, http.MethodPut, yellow, []byte(`{"settings":{"number_of_replicas":1}}`), nil)
	status, code, gauge := probe()
	testenv.ESJSON(t, http.MethodDelete, yellow, nil, nil)
	if status != http.StatusOK || code != "degraded" || gauge != "backend_elasticsearch_cluster_status 1" {
		t.Errorf("an index yellow: /readyz %d %s, %q; want 200, degraded, and status 1 (yellow)", status, code, gauge)
	}
	heal := testenv.RedIndex(t, esURL, prefix+"-2023.03.09")
	status, code, gauge = probe()
	heal()
	if status != http.StatusServiceUnavailable || code != "elasticsearch_red" || gauge != "backend_elasticsearch_cluster_status 2" {
		t.Errorf("an index red: /readyz %d %s, %q; want 503 elasticsearch_red and status 2 (red)", status, code, gauge)
	}
	if status, code, gauge := probe(); status != http.StatusOK || code != "" || gauge != "backend_elasticsearch_cluster_status 0" {
		t.Errorf("healed: /readyz %d %s, %q; want 200 and status 0", status, code, gauge)
	}
}
