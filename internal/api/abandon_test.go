//go:build integration

package api

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// TestABurstOfAbandonedRequestsLeavesNoPointInTimeOpen: clients that hang up
// while their point in time is still being opened must not leave it behind (it
// would live on for its keep-alive, outside API_MAX_STREAMS).
func TestABurstOfAbandonedRequestsLeavesNoPointInTimeOpen(t *testing.T) {
	t.Parallel()
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
	// Clients leaving are no failure of Elasticsearch (BackendElasticsearchFailing
	// reads these).
	for _, op := range []string{"open_pit", "search", "close_pit"} {
		for _, cause := range []string{"error", "refused"} {
			if v := metricValue(t, b.metrics, `backend_elasticsearch_request_failures_total{cause="`+cause+`",operation="`+op+`"}`); v != "0" {
				t.Errorf("Elasticsearch %s failures (%s) after a burst of abandoned requests = %q, want 0", op, cause, v)
			}
		}
	}
}

// TestAPreemptedStreamReleasesItsPointInTime: a stream that gives its slot to a
// newcomer ends, and closes its point in time, like one whose client left.
func TestAPreemptedStreamReleasesItsPointInTime(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	start := time.Date(2023, 3, 9, 10, 0, 0, 0, time.UTC)
	// More than both ends can hold, so that a client that reads nothing leaves
	// its stream waiting: the backend's pages ahead (small pages here), its
	// socket's send buffer and the client's receive buffer (both kept small,
	// the latter before it connects, so that the window it offers is small
	// too) hold under 1,000 of these documents of about 180 bytes: with 300 the
	// stream ends before anyone could pre-empt it, and the test fails.
	const docs = 5000
	testenv.IndexDocuments(t, esURL, prefix, docs, func(i int) pipeline.Item {
		ts := start.Add(time.Duration(i) * time.Second)
		return pipeline.Item{ID: fmt.Sprint(i), Timestamp: ts, Body: testenv.DocumentBody(fmt.Sprint(i), ts, "cam-1")}
	})
	// Both clients connect from the test's address.
	b := startBackendOn(t, esURL, prefix, Config{MaxStreams: 1, MaxClientStreams: 2, PreemptAfter: 500 * time.Millisecond, FirstPageSize: 100, PageSize: 200},
		func(l net.Listener) net.Listener { return &smallBufferListener{l} })
	addr := strings.TrimPrefix(b.url, "http://")
	const path = "/getStream?start_date=2023-03-09&end_date=2023-03-11"

	dialer := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
		return err
	}}
	idle, err := dialer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr)
	time.Sleep(2 * time.Second) // the buffers fill, and the stream waits on its client

	// On a loaded machine the first stream may still be reading its first pages
	// from Elasticsearch, not yet waiting on its client: the newcomer is then
	// rightly turned away, and asks again.
	res, body := b.get(path)
	for deadline := time.Now().Add(60 * time.Second); res.StatusCode == http.StatusServiceUnavailable && time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		res, body = b.get(path)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("the newcomer: %d %s, want 200", res.StatusCode, body)
	}
	if lines := strings.Count(string(body), "\n"); lines != docs {
		t.Errorf("the newcomer got %d documents, want %d", lines, docs)
	}
	if got := counted(t, b.metrics.streamCuts.WithLabelValues("preempted")); got != 1 {
		t.Errorf("backend_stream_cut_total{reason=\"preempted\"} = %g, want 1", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, b.metrics, "backend_streams_in_flight") != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("%s streams still in flight 10s after the newcomer's ended", metricValue(t, b.metrics, "backend_streams_in_flight"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := testenv.OpenSearchContexts(t, esURL+"/"+prefix+"-*"); n != 0 {
		t.Fatalf("%d search contexts are still open after the preempted stream ended", n)
	}
}
