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

// Red indices alone leave the webserver ready (it writes into the others, and
// its own failing bulks make it unready when it cannot); its metrics say red,
// and its /readyz names red and yellow as degraded.
func TestTheWebserverStaysReadyOnRedIndicesAndSaysSoInItsMetrics(t *testing.T) {
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	admin := testenv.FreeAddr(t)
	env := map[string]string{"NATS_URL": testenv.StartNATS(t).URL(), "ELASTICSEARCH_URL": esURL, "ES_INDEX_PREFIX": prefix,
		"ES_INDEX_REPLICAS": "0", "ADMIN_ADDR": admin}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { run(ctx, []string{"webserver"}, func(k string) string { return env[k] }, &testenv.Buffer{}) })
	t.Cleanup(func() { stop(); wg.Wait() })
	base := "http://" + admin
	testenv.WaitHTTP(t, base+"/readyz", 30*time.Second)

	probe := func() (int, string, string) {
		res, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Degraded map[string]string `json:"degraded"`
		}
		json.NewDecoder(res.Body).Decode(&body)
		res.Body.Close()
		ready, degraded := res.StatusCode, body.Degraded["elasticsearch"]
		if res, err = http.Get(base + "/metrics"); err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(res.Body)
		res.Body.Close()
		for line := range strings.Lines(string(metrics)) {
			if strings.HasPrefix(line, "webserver_elasticsearch_cluster_status ") {
				return ready, degraded, strings.TrimSpace(line)
			}
		}
		return ready, degraded, ""
	}
	// One node cannot hold a replica: yellow.
	yellow := esURL + "/" + prefix + "-2023.03.08"
	testenv.ESJSON(t, http.MethodPut, yellow, []byte(`{"settings":{"number_of_replicas":1}}`), nil)
	ready, degraded, gauge := probe()
	testenv.ESJSON(t, http.MethodDelete, yellow, nil, nil)
	if ready != http.StatusOK || !strings.Contains(degraded, "are yellow") || gauge != "webserver_elasticsearch_cluster_status 1" {
		t.Errorf("an index yellow: /readyz %d, degraded %q, %q; want 200, yellow named, and status 1 (yellow)", ready, degraded, gauge)
	}
	heal := testenv.RedIndex(t, esURL, prefix+"-2023.03.09")
	ready, degraded, gauge = probe()
	heal()
	if ready != http.StatusOK || !strings.Contains(degraded, "are red") || gauge != "webserver_elasticsearch_cluster_status 2" {
		t.Errorf("an index red: /readyz %d, degraded %q, %q; want 200, red named, and status 2 (red)", ready, degraded, gauge)
	}
	if ready, degraded, gauge := probe(); ready != http.StatusOK || degraded != "" || gauge != "webserver_elasticsearch_cluster_status 0" {
		t.Errorf("healed: /readyz %d, degraded %q, %q; want 200, nothing degraded, and status 0 (green)", ready, degraded, gauge)
	}
}
