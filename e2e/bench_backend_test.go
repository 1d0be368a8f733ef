//go:build integration && bench

package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/query"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// BenchmarkBackendExport measures, against the same Elasticsearch in one run, with
// max(BENCH_DOCS, BENCH_RSS_DOCS) documents indexed (defaults 200,000 and 1,000,000):
//
//	(a) the backend binary, with its default settings, streaming the BENCH_DOCS
//	    documents of one range through /getJsonStream to a client that reads as
//	    fast as it can, and
//	(b) the same range exported straight from Elasticsearch with the Go client,
//	    point in time + search_after, the same query, with pages of 1,000, 5,000
//	    and 10,000: the best of them is the ceiling;
//	(c) the same, in 2 parallel point-in-time slices merged back into
//	    @timestamp order, with pages of 10,000;
//	(d) the backend again with API_EXPORT_SLICES=2, its own sliced export;
//
// and reports docs/s for each and the backend's ratio to the best of (b) (target
// ≥ 0.95); the time to the first byte of /getJsonStream for a 5-minute window
// (target ≤ 50 ms); and the backend's peak resident memory (VmHWM) after
// streaming all BENCH_RSS_DOCS documents (target ≤ 64 MB). For (d) it reports
// the same with a 2slices_ prefix, and its ratios to (c) (ratio_2slices_to_es)
// and to the best of (b) (ratio_2slices). BENCH_BACKEND_ENV (space-separated
// KEY=value) changes the backend's settings (API_EXPORT_SLICES=2 still for d).
// Run it with `make bench`; it is meant for -benchtime 1x.
func BenchmarkBackendExport(b *testing.B) {
	n := envInt(b, "BENCH_DOCS", 200000)
	rssN := envInt(b, "BENCH_RSS_DOCS", 1000000)
	esURL := testenv.ElasticsearchURL(b)
	prefix := testenv.IndexPrefix(b, esURL)

	// One frame every 20 ms: a million frames fill 5.6 hours of one day.
	start := time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC)
	const every = 20 * time.Millisecond
	total := max(n, rssN)
	loadStart := time.Now()
	testenv.IndexDocuments(b, esURL, prefix, total, func(i int) pipeline.Item {
		ts := start.Add(time.Duration(i) * every)
		id := fmt.Sprintf("frame-%07d", i)
		return pipeline.Item{ID: id, Timestamp: ts, Body: testenv.DocumentBody(id, ts, "cam-"+strconv.Itoa(i%8))}
	})
	b.Logf("indexed %d documents in %s", total, time.Since(loadStart).Round(time.Second))

	throughputRange := [2]time.Time{start, start.Add(time.Duration(n) * every)}
	rssRange := [2]time.Time{start, start.Add(time.Duration(rssN) * every)}
	window := [2]time.Time{start.Add(time.Hour), start.Add(time.Hour + 5*time.Minute)}
	env := map[string]string{
		"ES_INDEX_PREFIX":     prefix,
		"RATE_LIMIT_REQUESTS": "0",
		"LOG_LEVEL":           "warn",
	}
	for _, kv := range strings.Fields(os.Getenv("BENCH_BACKEND_ENV")) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			b.Fatalf("BENCH_BACKEND_ENV: %q is not KEY=value", kv)
		}
		env[k] = v
	}
	backend := startBenchBackend(b, esURL, env)
	slicedEnv := maps.Clone(env)
	slicedEnv["API_EXPORT_SLICES"] = "2"
	slicedBackend := startBenchBackend(b, esURL, slicedEnv)

	// Warm Elasticsearch's caches and JIT so that neither side pays for it alone.
	exportCeiling(b, esURL, prefix, throughputRange, nil, n, 10000, 1)

	pageSizes := []int{1000, 5000, 10000}
	for b.Loop() {
		// Best of two for each, taking turns: the machine is shared with Elasticsearch.
		var backendRate, bestRate, slicedRate, slicedBackendRate float64
		rates := make([]float64, len(pageSizes))
		for range 2 {
			for i, size := range pageSizes {
				rates[i] = max(rates[i], float64(n)/exportCeiling(b, esURL, prefix, throughputRange, nil, n, size, 1).Seconds())
				bestRate = max(bestRate, rates[i])
			}
			slicedRate = max(slicedRate, float64(n)/exportCeiling(b, esURL, prefix, throughputRange, nil, n, 10000, 2).Seconds())
			backendRate = max(backendRate, float64(n)/backend.stream(b, throughputRange, "", n).Seconds())
			slicedBackendRate = max(slicedBackendRate, float64(n)/slicedBackend.stream(b, throughputRange, "", n).Seconds())
		}
		b.ReportMetric(backendRate, "backend_docs/s")
		for i, size := range pageSizes {
			b.ReportMetric(rates[i], fmt.Sprintf("es_%d_docs/s", size))
		}
		b.ReportMetric(slicedRate, "es_2slices_docs/s")
		b.ReportMetric(backendRate/bestRate, "ratio")
		b.ReportMetric(slicedBackendRate, "backend_2slices_docs/s")
		b.ReportMetric(slicedBackendRate/slicedRate, "ratio_2slices_to_es")
		b.ReportMetric(slicedBackendRate/bestRate, "ratio_2slices")

		p50, worst := backend.timeToFirstByte(b, window, 21)
		b.ReportMetric(float64(p50.Microseconds())/1000, "ttfb_p50_ms")
		b.ReportMetric(float64(worst.Microseconds())/1000, "ttfb_max_ms")
		p50, worst = slicedBackend.timeToFirstByte(b, window, 21)
		b.ReportMetric(float64(p50.Microseconds())/1000, "2slices_ttfb_p50_ms")
		b.ReportMetric(float64(worst.Microseconds())/1000, "2slices_ttfb_max_ms")

		b.ReportMetric(peakRSS(b, esURL, env, rssRange, rssN), "peak_rss_MB")
		b.ReportMetric(peakRSS(b, esURL, slicedEnv, rssRange, rssN), "2slices_peak_rss_MB")
	}
}

// peakRSS streams the range through a fresh backend, so that its peak resident
// memory is this stream's alone, and returns that peak in MiB.
func peakRSS(b *testing.B, esURL string, env map[string]string, r [2]time.Time, want int) float64 {
	b.Helper()
	bb := startBenchBackend(b, esURL, env)
	took := bb.stream(b, r, "", want)
	peak, err := bb.proc.PeakRSS()
	if err != nil {
		b.Fatal(err)
	}
	mib := float64(peak) / (1 << 20)
	b.Logf("streamed %d documents in %s (%.0f docs/s) with a peak RSS of %.1f MiB (API_EXPORT_SLICES=%s)",
		want, took.Round(time.Millisecond), float64(want)/took.Seconds(), mib, cmp.Or(env["API_EXPORT_SLICES"], "1"))
	return mib
}

type benchBackend struct {
	proc   *testenv.Process
	url    string
	client *http.Client
}

func startBenchBackend(b *testing.B, esURL string, env map[string]string) *benchBackend {
	b.Helper()
	listen := testenv.FreeAddr(b)
	full := map[string]string{"ELASTICSEARCH_URL": esURL, "LISTEN_ADDR": listen}
	for k, v := range env {
		full[k] = v
	}
	proc := testenv.StartProcess(b, binary(b, "backend"), full)
	testenv.WaitHTTP(b, "http://"+listen+"/readyz", 30*time.Second)
	// No gzip: the client reads what a browser would have to decompress anyway, and
	// the comparison is with the raw export.
	return &benchBackend{proc: proc, url: "http://" + listen, client: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
}

func rangeQuery(r [2]time.Time) string {
	return "?start_date=" + r[0].Format(time.RFC3339Nano) + "&end_date=" + r[1].Format(time.RFC3339Nano)
}

// stream reads the whole range, or its documents that q matches (all when q is
// empty), through /getJsonStream and returns how long it took, checking that
// want documents were sent and that the array was closed.
func (bb *benchBackend) stream(b *testing.B, r [2]time.Time, q string, want int) time.Duration {
	b.Helper()
	before := bb.documentsStreamed(b)
	target := bb.url + "/getJsonStream" + rangeQuery(r)
	if q != "" {
		target += "&q=" + url.QueryEscape(q)
	}
	start := time.Now()
	res, err := bb.client.Get(target)
	if err != nil {
		b.Fatal(err)
	}
	tail := &lastBytes{}
	_, err = io.Copy(tail, res.Body)
	res.Body.Close()
	took := time.Since(start)
	if err != nil || res.StatusCode != http.StatusOK || !bytes.HasSuffix(tail.b, []byte("}]\n")) {
		b.Fatalf("getJsonStream: %s, %v, ending %q", res.Status, err, tail.b)
	}
	if got := bb.documentsStreamed(b) - before; got != want {
		b.Fatalf("the backend streamed %d documents, want %d", got, want)
	}
	return took
}

// lastBytes keeps the end of what is written to it: enough to see that a JSON
// array was closed, without the client spending time parsing it.
type lastBytes struct{ b []byte }

func (l *lastBytes) Write(p []byte) (int, error) {
	l.b = append(l.b, p...)
	if len(l.b) > 64 {
		l.b = l.b[len(l.b)-64:]
	}
	return len(p), nil
}

// documentsStreamed reads the backend's own count of documents sent.
func (bb *benchBackend) documentsStreamed(b *testing.B) int {
	b.Helper()
	res, err := bb.client.Get(bb.url + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, `backend_documents_streamed_total{route="/getJsonStream"} `); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return int(f)
		}
	}
	return 0
}

// timeToFirstByte requests the window count times and returns the median and the
// slowest time from sending the request to the first byte of the answer.
func (bb *benchBackend) timeToFirstByte(b *testing.B, window [2]time.Time, count int) (median, worst time.Duration) {
	b.Helper()
	var times []time.Duration
	for range count {
		var sent, first time.Time
		trace := &httptrace.ClientTrace{
			WroteRequest:         func(httptrace.WroteRequestInfo) { sent = time.Now() },
			GotFirstResponseByte: func() { first = time.Now() },
		}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, bb.url+"/getJsonStream"+rangeQuery(window), nil)
		res, err := bb.client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("getJsonStream for the window: %s", res.Status)
		}
		times = append(times, first.Sub(sent))
	}
	slices.Sort(times)
	return times[len(times)/2], times[len(times)-1]
}

// exportCeiling exports the range straight from Elasticsearch with the official Go
// client, the way the backend does but with nothing in between, keeping only
// the documents filter matches (all when it is nil), and checks that there
// were want of them: point in time,
// search_after on @timestamp and _shard_doc, filter_path, hits decoded to their
// raw _source, the next page fetched while the current one is handled. With
// more than one slice, each slice of the point in time is paged by a goroutine
// of its own and the slices are merged back into (@timestamp, _shard_doc) order.
// It returns how long that took.
func exportCeiling(b *testing.B, esURL, prefix string, r [2]time.Time, filter query.Query, want, pageSize, slices int) time.Duration {
	b.Helper()
	es, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: []string{esURL}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	res, err := es.OpenPointInTime([]string{prefix + "-*"}, "1m", es.OpenPointInTime.WithContext(ctx))
	if err != nil || res.IsError() {
		b.Fatalf("open point in time: %v %v", err, res)
	}
	var pit struct {
		ID string `json:"id"`
	}
	json.NewDecoder(res.Body).Decode(&pit)
	res.Body.Close()

	pages := make([]chan []exportHit, slices)
	for i := range pages {
		pages[i] = make(chan []exportHit, 1) // one page ahead, as the backend
		go exportSlice(b, es, pit.ID, r, filter, pageSize, i, slices, pages[i])
	}
	count := 0
	if slices == 1 {
		for page := range pages[0] {
			count += len(page)
		}
	} else {
		count = mergeSlices(b, pages)
	}
	took := time.Since(start)

	closeBody, _ := json.Marshal(map[string]string{"id": pit.ID})
	if res, err := es.ClosePointInTime(es.ClosePointInTime.WithBody(bytes.NewReader(closeBody))); err == nil {
		res.Body.Close()
	}
	if count != want {
		b.Fatalf("the ceiling exported %d documents, want %d", count, want)
	}
	return took
}

type exportHit struct {
	Source json.RawMessage `json:"_source"`
	Sort   json.RawMessage `json:"sort"`
}

// exportSlice sends the pages of slice id of the point in time's of slices to out
// (all of it when of is 1), and closes out.
func exportSlice(b *testing.B, es *elasticsearch.Client, pit string, r [2]time.Time, filter query.Query, pageSize, id, of int, out chan<- []exportHit) {
	defer close(out)
	// As the store asks: every condition a filter, scored by none.
	conditions := []any{map[string]any{"range": map[string]any{"@timestamp": map[string]any{
		"gte": r[0].Format(time.RFC3339Nano), "lt": r[1].Format(time.RFC3339Nano), "format": "strict_date_optional_time_nanos"}}}}
	if filter != nil {
		conditions = append(conditions, filter)
	}
	var after json.RawMessage
	for {
		search := map[string]any{
			"size":             pageSize,
			"query":            map[string]any{"bool": map[string]any{"filter": conditions}},
			"sort":             []any{map[string]any{"@timestamp": "asc"}, map[string]any{"_shard_doc": "asc"}},
			"pit":              map[string]any{"id": pit, "keep_alive": "1m"},
			"track_total_hits": false,
		}
		if of > 1 {
			search["slice"] = map[string]any{"id": id, "max": of}
		}
		if after != nil {
			search["search_after"] = after
		}
		body, _ := json.Marshal(search)
		res, err := es.Search(es.Search.WithBody(bytes.NewReader(body)), es.Search.WithFilterPath("hits.hits._source", "hits.hits.sort"))
		if err != nil || res.IsError() {
			b.Errorf("search: %v %v", err, res)
			return
		}
		var page struct {
			Hits struct {
				Hits []exportHit `json:"hits"`
			} `json:"hits"`
		}
		err = json.NewDecoder(res.Body).Decode(&page)
		res.Body.Close()
		if err != nil {
			b.Error(err)
			return
		}
		hits := page.Hits.Hits
		if len(hits) > 0 {
			out <- hits
		}
		if len(hits) < pageSize {
			return
		}
		after = hits[len(hits)-1].Sort
	}
}

// mergeSlices takes the documents of every slice in (@timestamp, _shard_doc)
// order, checking that order, and returns how many there were.
func mergeSlices(b *testing.B, pages []chan []exportHit) int {
	type head struct {
		page []exportHit
		key  [2]int64
	}
	heads := make([]*head, len(pages))
	advance := func(i int) {
		h := heads[i]
		if h != nil && len(h.page) > 1 {
			h.page = h.page[1:]
		} else if page, ok := <-pages[i]; ok {
			h = &head{page: page}
		} else {
			heads[i] = nil
			return
		}
		var key []int64
		if err := json.Unmarshal(h.page[0].Sort, &key); err != nil || len(key) != 2 {
			b.Fatalf("sort values %s: %v", h.page[0].Sort, err)
		}
		h.key = [2]int64{key[0], key[1]}
		heads[i] = h
	}
	for i := range heads {
		advance(i)
	}
	count := 0
	var last [2]int64
	for {
		next := -1
		for i, h := range heads {
			if h != nil && (next < 0 || h.key[0] < heads[next].key[0] || h.key[0] == heads[next].key[0] && h.key[1] < heads[next].key[1]) {
				next = i
			}
		}
		if next < 0 {
			return count
		}
		if k := heads[next].key; count > 0 && k[0] < last[0] {
			b.Fatalf("merged slices out of order: %v after %v", k, last)
		}
		last = heads[next].key
		count++
		advance(next)
	}
}
