//go:build integration && bench

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/publish"
	"github.com/annotated-data/pipeline/internal/query"
	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// BenchmarkQuery measures what issue 21 promises of a busy hour:
// BENCH_QUERY_DOCS frames (default 1,000,000) of 50 cameras, spread evenly over
// one hour, published to JetStream and ingested by the webserver binary (so
// indexed with its own template) under one index prefix. The hour is ingested
// once; each sub-benchmark reads it:
//
//	Ingest: the webserver's rate draining the hour's backlog from JetStream,
//	    from its start to the last document acked.
//	Counts: /getCounts over the hour with interval=auto: the median time to the
//	    whole answer (target ≤ 100 ms) and its size (≤ 20 KB); with
//	    by=camera_id, the same (≤ 200 ms). Elasticsearch's request cache is
//	    cleared before each request: a person asks for a new range, not for the
//	    same one 21 times. In turn with each, the same aggregations asked of
//	    Elasticsearch directly (es_p50_ms): what the backend adds to it.
//	Page: the page at / on the hour in headless Chromium, served over HTTPS as
//	    in production, cache disabled: the time from navigation until it sets
//	    document.body.dataset.phase to "complete" (≤ 1 s), and the bytes it
//	    received in all, by Network.loadingFinished's encodedDataLength
//	    (≤ 300 KB); the median of 3 loads.
//	FilteredExport: /getJsonStream with a q that matches a tenth of the hour
//	    (5 cameras of 50), against the same query exported straight from
//	    Elasticsearch through a point in time at its best page size; the
//	    backend's ratio to it (≥ 0.9).
//
// BENCH_WEBSERVER_ENV tunes the webserver that ingests the hour, as in
// BenchmarkWebserverIngest: ES_NESTED_FIELDS=none, for one, measures what the
// nested labels cost the counts.
//
// The targets are reported, never asserted. Run it with `make bench`, or alone:
//
//	go test -tags 'integration bench' -run '^$' -bench Query -benchtime 1x -timeout 60m ./e2e/
func BenchmarkQuery(b *testing.B) {
	n := envInt(b, "BENCH_QUERY_DOCS", 1000000)
	esURL := testenv.ElasticsearchURL(b)
	hour := ingestBusyHour(b, esURL, n, 50)
	backend := startBenchBackend(b, esURL, map[string]string{
		"ES_INDEX_PREFIX": hour.prefix, "RATE_LIMIT_REQUESTS": "0", "LOG_LEVEL": "warn",
	})

	b.Run("Ingest", func(b *testing.B) {
		for b.Loop() {
			b.Log(hour.ingested)
			b.ReportMetric(hour.rate, "webserver_docs/s")
		}
	})

	b.Run("Counts", func(b *testing.B) {
		for b.Loop() {
			all := backend.counts(b, esURL, hour, "", 21)
			b.ReportMetric(ms(all.backend), "p50_ms")
			b.ReportMetric(float64(all.size), "answer_bytes")
			b.ReportMetric(ms(all.es), "es_p50_ms")
			byCamera := backend.counts(b, esURL, hour, "camera_id", 21)
			b.ReportMetric(ms(byCamera.backend), "by_camera_p50_ms")
			b.ReportMetric(float64(byCamera.size), "by_camera_answer_bytes")
			b.ReportMetric(ms(byCamera.es), "by_camera_es_p50_ms")
		}
	})

	b.Run("Page", func(b *testing.B) {
		for b.Loop() {
			took, received := measurePage(b, esURL, hour, 3)
			b.ReportMetric(ms(took), "complete_ms")
			b.ReportMetric(received, "received_bytes")
		}
	})

	b.Run("FilteredExport", func(b *testing.B) {
		const q = "camera_id:(cam-01 or cam-02 or cam-03 or cam-04 or cam-05)"
		// The query the backend builds from q, for camera_id as the template maps
		// it: a keyword.
		expr, err := query.Parse(q)
		if err != nil {
			b.Fatal(err)
		}
		filter, _, err := expr.Query(query.Caps{"camera_id": {"keyword": nil}}, time.UTC)
		if err != nil {
			b.Fatal(err)
		}
		want := hour.framesOf(5)
		// Warm Elasticsearch's caches for this query, so that neither side pays
		// for it alone.
		exportCeiling(b, esURL, hour.prefix, hour.r, filter, want, 10000, 1)
		pageSizes := []int{1000, 5000, 10000}
		for b.Loop() {
			// Best of two for each, taking turns, as BenchmarkBackendExport.
			var backendRate, bestRate float64
			rates := make([]float64, len(pageSizes))
			for range 2 {
				for i, size := range pageSizes {
					rates[i] = max(rates[i], float64(want)/exportCeiling(b, esURL, hour.prefix, hour.r, filter, want, size, 1).Seconds())
					bestRate = max(bestRate, rates[i])
				}
				backendRate = max(backendRate, float64(want)/backend.stream(b, hour.r, q, want).Seconds())
			}
			b.Logf("%d of %d documents match %s: es %.0f/%.0f/%.0f docs/s at pages of %v, backend %.0f docs/s",
				want, hour.n, q, rates[0], rates[1], rates[2], pageSizes, backendRate)
			b.ReportMetric(backendRate, "backend_docs/s")
			b.ReportMetric(bestRate, "es_best_docs/s")
			b.ReportMetric(backendRate/bestRate, "ratio")
		}
	})
}

// busyHour is the benchmark's data: n frames of cameras cameras, evenly spread
// over the hour r, stored under prefix.
type busyHour struct {
	prefix     string
	r          [2]time.Time
	n, cameras int
	rate       float64 // documents per second the webserver drained
	ingested   string  // how, in words
}

// framesOf is how many of the hour's frames come from the first k cameras
// (cam-01 to cam-k): the generator takes the cameras round robin.
func (h busyHour) framesOf(k int) int {
	full, rest := h.n/h.cameras, h.n%h.cameras
	return full*k + min(rest, k)
}

// ingestBusyHour publishes the frames to a JetStream stream of a nats-server of
// its own, generating them as they are sent (a million frames would weigh half a
// gigabyte held in memory), lets a webserver drain it, and waits until every
// frame is searchable.
func ingestBusyHour(b *testing.B, esURL string, n, cameras int) busyHour {
	start := time.Date(2023, 3, 9, 19, 0, 0, 0, time.UTC)
	h := busyHour{prefix: testenv.IndexPrefix(b, esURL), r: [2]time.Time{start, start.Add(time.Hour)}, n: n, cameras: cameras}
	rounds := (n + cameras - 1) / cameras
	gen := &sample.Generator{Start: start, Interval: time.Hour / time.Duration(rounds), Cameras: cameras}

	began := time.Now()
	natsURL, natsProc := testenv.StartNATSServerProcess(b)
	js := testenv.JetStream(b, natsURL, jetstream.WithPublishAsyncMaxPending(4096))
	publishSource(b, js, n, publish.Frames(gen, "annotations", n))
	published := time.Since(began)
	bin := binary(b, "webserver") // built before the clock starts
	drainStart := time.Now()
	ws, admin := startBenchWebserver(b, bin, natsURL, esURL, h.prefix)
	waitDrained(b, js, uint64(n), admin)
	h.rate = float64(n) / time.Since(drainStart).Seconds()
	if err := ws.Stop(); err != nil {
		b.Fatalf("stop the webserver: %v", err)
	}
	natsProc.Stop() // its stream is no longer needed: give its memory back
	testenv.Refresh(b, esURL, h.prefix+"-*")
	if got := countDocuments(b, esURL, h.prefix+"-*"); got != n {
		b.Fatalf("%d documents stored under %s, want %d", got, h.prefix, n)
	}
	h.ingested = fmt.Sprintf("%d frames of %d cameras from %s to %s: published in %s, all indexed %s later",
		n, cameras, h.r[0].Format(time.RFC3339), h.r[1].Format(time.RFC3339),
		published.Round(time.Second), (time.Since(began) - published).Round(time.Second))
	return h
}

// countDocuments is how many documents the indices matching pattern hold.
func countDocuments(b *testing.B, esURL, pattern string) int {
	res, err := http.Get(esURL + "/" + pattern + "/_count")
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	var c struct {
		Count int `json:"count"`
	}
	if err := json.NewDecoder(res.Body).Decode(&c); err != nil || res.StatusCode != http.StatusOK {
		b.Fatalf("count %s: %s %v", pattern, res.Status, err)
	}
	return c.Count
}

// clearRequestCache empties Elasticsearch's shard request cache for the indices
// matching pattern, which would otherwise answer a repeated aggregation from
// memory.
func clearRequestCache(b *testing.B, esURL, pattern string) {
	res, err := http.Post(esURL+"/"+pattern+"/_cache/clear?request=true", "application/json", nil)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b.Fatalf("clear the request cache of %s: %s", pattern, res.Status)
	}
}

// countsAnswer is the part of a /getCounts answer the benchmark checks.
type countsAnswer struct {
	Interval string `json:"interval"`
	Total    int    `json:"total"`
	Buckets  []struct {
		Count int `json:"count"`
	} `json:"buckets"`
	By *struct {
		Values []struct {
			Value string `json:"value"`
		} `json:"values"`
	} `json:"by"`
}

// countsRun is what counts measured: the median time from sending a request to
// the end of its answer, for the backend and for the same aggregations asked of
// Elasticsearch directly, and the size of the backend's answer.
type countsRun struct {
	backend, es time.Duration
	size        int
}

// counts asks /getCounts for the whole hour, split by the field by (none when
// empty), times times, each with a cold request cache; in turn with each, it
// asks Elasticsearch for the same aggregations as the store builds them, at the
// interval the backend chose: the ceiling. It checks that the backend's answer
// counts every frame of the hour.
func (bb *benchBackend) counts(b *testing.B, esURL string, h busyHour, by string, times int) countsRun {
	b.Helper()
	target := bb.url + "/getCounts" + rangeQuery(h.r) + "&interval=auto"
	if by != "" {
		target += "&by=" + url.QueryEscape(by)
	}
	var took, esTook []time.Duration
	var body []byte
	var a countsAnswer
	for range times {
		clearRequestCache(b, esURL, h.prefix+"-*")
		start := time.Now()
		res, err := bb.client.Get(target)
		if err != nil {
			b.Fatal(err)
		}
		body, err = io.ReadAll(res.Body)
		res.Body.Close()
		took = append(took, time.Since(start))
		if err != nil || res.StatusCode != http.StatusOK {
			b.Fatalf("getCounts: %s %v %.300s", res.Status, err, body)
		}
		if err := json.Unmarshal(body, &a); err != nil {
			b.Fatalf("getCounts answered %.300s: %v", body, err)
		}
		clearRequestCache(b, esURL, h.prefix+"-*")
		esTook = append(esTook, countsCeiling(b, esURL, h, by, a.Interval))
	}
	sum := 0
	for _, bucket := range a.Buckets {
		sum += bucket.Count
	}
	if a.Total != h.n || sum != h.n || by != "" && (a.By == nil || len(a.By.Values) == 0) {
		b.Fatalf("getCounts counted %d in all, %d in its %d buckets, want %d; by: %+v", a.Total, sum, len(a.Buckets), h.n, a.By)
	}
	slices.Sort(took)
	slices.Sort(esTook)
	b.Logf("getCounts by %q: %d buckets of %s, %d bytes; fastest %s, median %s, slowest %s; Elasticsearch alone: median %s",
		by, len(a.Buckets), a.Interval, len(body),
		took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond),
		esTook[len(esTook)/2].Round(time.Millisecond))
	return countsRun{backend: took[len(took)/2], es: esTook[len(esTook)/2], size: len(body)}
}

// countsCeiling sends Elasticsearch the search of aggregations the store sends
// for the hour's counts at interval, split by the top 10 values of by (a
// keyword of the frames themselves) when it is not empty, and returns how long
// the answer took.
func countsCeiling(b *testing.B, esURL string, h busyHour, by, interval string) time.Duration {
	overTime := map[string]any{"date_histogram": map[string]any{
		"field": "@timestamp", "fixed_interval": interval, "min_doc_count": 0,
		"extended_bounds": map[string]any{"min": h.r[0].UnixMilli(), "max": h.r[1].UnixMilli() - 1},
	}}
	aggs := map[string]any{"over_time": overTime}
	if by != "" {
		aggs["by"] = map[string]any{"terms": map[string]any{"field": by, "size": 10}, "aggs": map[string]any{"over_time": overTime}}
	}
	body, _ := json.Marshal(map[string]any{
		"size": 0, "track_total_hits": false, "aggs": aggs,
		"query": map[string]any{"bool": map[string]any{"filter": []any{map[string]any{"range": map[string]any{"@timestamp": map[string]any{
			"gte": h.r[0].Format(time.RFC3339Nano), "lt": h.r[1].Format(time.RFC3339Nano), "format": "strict_date_optional_time_nanos"}}}}}},
	})
	start := time.Now()
	res, err := http.Post(esURL+"/"+h.prefix+"-*/_search?filter_path=aggregations,_shards.failed", "application/json", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	answer, err := io.ReadAll(res.Body)
	res.Body.Close()
	took := time.Since(start)
	if err != nil || res.StatusCode != http.StatusOK {
		b.Fatalf("counts straight from Elasticsearch: %s %v %.300s", res.Status, err, answer)
	}
	return took
}

// measurePage loads the page at / on the hour times times in a headless
// Chromium, from a backend of its own serving HTTPS with production's defaults
// (but for the rate limit: one person reloading a page a few times is not what
// it guards against), and returns the median time from navigation until the page
// calls its range complete, and the median of the bytes received meanwhile.
func measurePage(b *testing.B, esURL string, h busyHour, times int) (took time.Duration, received float64) {
	chromiumBin := chromiumPath(b)
	ca := testenv.NewCA(b, "page benchmark")
	cert := ca.Issue("backend", "127.0.0.1")
	certFile, keyFile := ca.WriteKeyPair(cert)
	listen := testenv.FreeAddr(b)
	testenv.StartProcess(b, binary(b, "backend"), map[string]string{
		"ELASTICSEARCH_URL": esURL, "ES_INDEX_PREFIX": h.prefix, "LISTEN_ADDR": listen, "LOG_LEVEL": "warn",
		"TLS_MODE": "file", "TLS_CERT_FILE": certFile, "TLS_KEY_FILE": keyFile, "RATE_LIMIT_REQUESTS": "0",
	})
	origin := "https://" + listen
	waitHTTPS(b, ca, origin+"/healthz")
	spki := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
	tab := startChromium(b, chromiumBin, base64.StdEncoding.EncodeToString(spki[:]))
	if _, err := chromedp.Call(tab.ctx, network.SetCacheDisabled, network.SetCacheDisabledParams{CacheDisabled: true}); err != nil {
		b.Fatalf("disable the browser's cache: %v", err)
	}
	if _, err := chromedp.Call(tab.ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: phaseObserver}); err != nil {
		b.Fatalf("watch the page's phase: %v", err)
	}

	// A link to the hour, as a person would share it: the page shows it at once.
	link := origin + "/?" + url.Values{"start": {h.r[0].Format(time.RFC3339)}, "end": {h.r[1].Format(time.RFC3339)}}.Encode()
	var tooks []time.Duration
	var sizes []float64
	for i := range times {
		clearRequestCache(b, esURL, h.prefix+"-*")
		load := loadPage(b, tab, link)
		b.Logf("page load %d: %s to %s, %d requests, %.0f bytes received", i+1, load.phase, load.took.Round(time.Millisecond), load.requests, load.received)
		if load.phase != "complete" {
			b.Fatalf("the page ended %s, not complete (status %q)", load.phase, load.status)
		}
		tooks = append(tooks, load.took)
		sizes = append(sizes, load.received)
	}
	slices.Sort(tooks)
	slices.Sort(sizes)
	return tooks[len(tooks)/2], sizes[len(sizes)/2]
}

// phaseObserver runs in every page before its own scripts, and notes when the
// page first sets its phase to complete or failed: the time by the page's own
// clock (performance.now(), from the navigation's start), at the moment it
// happened, however late the benchmark comes to read it.
const phaseObserver = `new MutationObserver((_, observer) => {
	const phase = document.body?.dataset.phase;
	if (phase !== 'complete' && phase !== 'failed') return;
	window.__benchPhaseEnded = {phase, ms: performance.now(), status: document.getElementById('status')?.textContent ?? ''};
	observer.disconnect();
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-phase']});`

// phaseEnd is what phaseObserver noted.
type phaseEnd struct {
	Phase  string  `json:"phase"`
	Status string  `json:"status"`
	MS     float64 `json:"ms"`
}

// pageLoad is what one load of the page took.
type pageLoad struct {
	phase, status string        // the page's phase at the end, and what it said
	took          time.Duration // from navigation to that phase, by the page's own clock
	received      float64       // bytes over the network, headers included
	requests      int
}

// loadPage opens link in tab, after a blank page so that nothing of the last
// load is left, and waits until the page's phase is complete or failed.
func loadPage(b *testing.B, tab *chromium, link string) pageLoad {
	ctx, cancel := context.WithTimeout(tab.ctx, 10*time.Minute) // the page of old streamed every document
	defer cancel()
	err := chromedp.Do(ctx, chromedp.Navigate("about:blank"))
	if err != nil {
		b.Fatalf("browser: %v", err)
	}

	// Bytes by request: a request that never finished (a stream cut off when
	// the page is done) counts what it received so far.
	var mu sync.Mutex
	bytesOf := map[network.RequestID]float64{}
	finished := map[network.RequestID]bool{}
	listening, stop := context.WithCancel(ctx)
	defer stop()
	err = chromedp.Listen(listening, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventDataReceived:
			if !finished[ev.RequestID] {
				bytesOf[ev.RequestID] += float64(ev.EncodedDataLength)
			}
		case *network.EventLoadingFinished:
			bytesOf[ev.RequestID] = ev.EncodedDataLength
			finished[ev.RequestID] = true
		}
	})
	if err != nil {
		b.Fatalf("browser: %v", err)
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(link)); err != nil {
		b.Fatalf("browser: open %s: %v", link, err)
	}
	// Read what the observer of phaseObserver noted, until it noted something.
	// A read can fail while a navigation replaces the page's context.
	var d *phaseEnd
	for d == nil {
		if ctx.Err() != nil {
			b.Fatalf("browser: waiting for the page to complete %s: %v (last read: %v)", link, ctx.Err(), err)
		}
		time.Sleep(50 * time.Millisecond)
		d, err = chromedp.Run(ctx, chromedp.Evaluate[*phaseEnd](`window.__benchPhaseEnded ?? null`))
		if err != nil {
			d = nil
		}
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	load := pageLoad{phase: d.Phase, status: d.Status, took: time.Duration(d.MS * float64(time.Millisecond)), requests: len(bytesOf)}
	for _, n := range bytesOf {
		load.received += n
	}
	return load
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
