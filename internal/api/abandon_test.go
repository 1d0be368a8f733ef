//go:build integration

package api

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// TestABurstOfAbandonedRequestsLeavesNoPointInTimeOpen: clients that hang up
// while their point in time is still being opened must not leave it behind (it
// would live on for its keep-alive, outside API_MAX_STREAMS).
func TestABurstOfAbandonedRequestsLeavesNoPointInTimeOpen(t *testing.T) {
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	start := time.Date(2023, 3, 9, 10, 0, 0, 0, time.UTC)
	testenv.IndexDocuments(t, esURL, prefix, 2000, func(i int) pipeline.Item {
		ts := start.Add(time.Duration(i) * time.Second)
		return pipeline.Item{ID: fmt.Sprint(i), Timestamp: ts, Body: testenv.DocumentBody(fmt.Sprint(i), ts, "cam-1")}
	})
	b := startBackend(t, esURL, prefix, Config{MaxStreams: 300, MaxClientStreams: 300})
	addr := strings.TrimPrefix(b.url, "http://")

	// 300 clients send a request and hang up 0-30 ms later, without reading.
	var wg sync.WaitGroup
	for range 300 {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			fmt.Fprintf(c, "GET /getStream?start_date=2023-03-09&end_date=2023-03-10 HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
			time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
			c.(*net.TCPConn).SetLinger(0) // a reset, as a killed client leaves it
			c.Close()
		})
	}
	wg.Wait()

	// Once the handlers have noticed (each must still finish opening its point in
	// time, to be able to close it), nothing may be left open.
	deadline := time.Now().Add(30 * time.Second)
	for metricValue(t, b.metrics, "backend_streams_in_flight") != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("%s streams still in flight 30s after their clients left", metricValue(t, b.metrics, "backend_streams_in_flight"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := testenv.OpenSearchContexts(t, esURL+"/"+prefix+"-*"); n != 0 {
		t.Fatalf("%d search contexts are still open in Elasticsearch a second after the last abandoned stream ended", n)
	}
}
