//go:build integration

package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// Red indices alone leave the webserver ready (it writes into the others, and
// its own failing bulks make it unready when it cannot), and its metrics say red.
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

	probe := func() (int, string) {
		res, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		ready := res.StatusCode
		if res, err = http.Get(base + "/metrics"); err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(res.Body)
		res.Body.Close()
		for line := range strings.Lines(string(metrics)) {
			if strings.HasPrefix(line, "webserver_elasticsearch_cluster_status ") {
				return ready, strings.TrimSpace(line)
			}
		}
		return ready, ""
	}
	heal := testenv.RedIndex(t, esURL, prefix+"-2023.03.09")
	ready, gauge := probe()
	heal()
	if ready != http.StatusOK || gauge != "webserver_elasticsearch_cluster_status 2" {
		t.Errorf("an index red: /readyz %d, %q; want 200 and status 2 (red)", ready, gauge)
	}
	if ready, gauge := probe(); ready != http.StatusOK || gauge != "webserver_elasticsearch_cluster_status 0" {
		t.Errorf("healed: /readyz %d, %q; want 200 and status 0 (green)", ready, gauge)
	}
}
