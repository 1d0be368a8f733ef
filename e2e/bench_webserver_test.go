//go:build integration && bench

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esutil"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/document"
	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/publish"
	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// BenchmarkWebserverIngest compares, against the same Elasticsearch in one run:
//
//	(a) the webserver draining a backlog of N messages from JetStream, from start
//	    until every message is acked (so every document is stored);
//	(b) the same N documents bulk-loaded straight into a fresh index with
//	    esutil.BulkIndexer: the ceiling for a Go client;
//	(c) Elasticsearch's own limit for these documents: every bulk body encoded
//	    before the clock starts (by the store's encoder, so with the same ids,
//	    indices, @timestamp and @nats), then POSTed with plain HTTP; the best
//	    cell of a grid of request sizes × concurrency is used;
//	(d) the bare pipeline (barePipeline): (c)'s bodies, but fetched from the
//	    same backlog through a durable consumer and acked message by message,
//	    as the webserver must; what NATS itself costs on this machine.
//
// (a), (c) at its best cell and (d) take BENCH_ROUNDS turns (default 3), and
// each figure is the median of its rounds. It reports docs/s for each, the
// webserver's ratio to (b) (target ≥ 0.9), to (c) (ratio_raw, target ≥ 0.7)
// and to (d) (ratio_bare), (d)'s ratio to (c) (bare_ratio_raw: the most any
// pipeline with per-message acks reaches here), and the processor time per
// document of the webserver, nats-server and Elasticsearch (when it is the
// local node) during (a) and (c). N is BENCH_DOCS (default 200,000). Run it
// with `make bench`.
//
// BENCH_WEBSERVER_ENV (space-separated KEY=value) tunes the webserver; its
// ES_INDEX_SHARDS and ES_INDEX_REFRESH_INTERVAL apply to (b), (c) and (d) too,
// so that the ratios compare like with like. BENCH_PPROF=dir saves CPU profiles
// of the webserver and nats-server during (a) (the last round's) as
// dir/webserver-cpu.pprof and dir/nats-server-cpu.pprof; BENCH_WEBSERVER_ONLY=1
// runs (a) alone. BENCH_WEBSERVER_BASE=path runs that webserver binary too
// (say, one built from the commit before a change) at the start of each round,
// and reports it with a base_ prefix: before and after, alternating.
func BenchmarkWebserverIngest(b *testing.B) {
	n := envInt(b, "BENCH_DOCS", 200000)
	esURL := testenv.ElasticsearchURL(b)
	frames := sampleFrames(b, n)
	docs := buildDocs(b, frames)
	binary(b, "webserver") // built before any clock starts
	tmpl := benchTemplate(b)

	// Warm the node's JIT and caches so neither side pays for it alone.
	rawBulk(b, esURL, docs[:min(len(docs), 20000)], tmpl, 5000, 2, nil)
	only := os.Getenv("BENCH_WEBSERVER_ONLY") != ""
	baseBin := os.Getenv("BENCH_WEBSERVER_BASE")
	rounds := envInt(b, "BENCH_ROUNDS", 3)

	for b.Loop() {
		var best rawRun
		var ceilingRate float64
		if !only {
			// The ceilings are the best of a few tunings, not one guess.
			line := "BulkIndexer:"
			for _, tuning := range []bulkTuning{{2, 5 << 20}, {2, 2 << 20}, {4, 2 << 20}} {
				rate := ceiling(b, esURL, docs, tmpl, tuning)
				line += fmt.Sprintf(" %d workers flushing at %d MiB %.0f docs/s;", tuning.workers, tuning.flushBytes>>20, rate)
				ceilingRate = max(ceilingRate, rate)
			}
			b.Log(line) // one line: go test keeps only a benchmark's first 10
			best = rawBulkGrid(b, esURL, docs, tmpl)
		}
		// Then the webserver, the raw limit at its best cell and the bare pipeline
		// take turns, so that a slow spell of this shared machine weighs on each
		// alike; each figure is the median of the rounds.
		var ws, baseWS []drain
		var raw []rawRun
		var bare []bareRun
		var ratioRaw, ratioBare, baseRatioRaw []float64
		for r := range rounds {
			if baseBin != "" {
				baseWS = append(baseWS, webserverDrain(b, esURL, baseBin, frames))
			}
			d := webserverDrain(b, esURL, binary(b, "webserver"), frames)
			ws = append(ws, d)
			if only {
				b.Logf("round %d: webserver %.0f docs/s (%s)", r+1, d.rate, d.bulks)
				continue // comparing settings of the webserver alone
			}
			raw = append(raw, rawBulk(b, esURL, docs, tmpl, best.perRequest, best.concurrency, nil))
			bare = append(bare, barePipeline(b, esURL, frames, docs, tmpl, 5000))
			ratioRaw = append(ratioRaw, d.rate/raw[r].rate)
			if baseBin != "" {
				baseRatioRaw = append(baseRatioRaw, baseWS[r].rate/raw[r].rate)
			}
			ratioBare = append(ratioBare, d.rate/bare[r].rate)
			line := fmt.Sprintf("round %d: webserver %.0f (%s), raw bulk %.0f, bare pipeline %.0f docs/s: %.2f of raw, %.2f of bare",
				r+1, d.rate, d.bulks, raw[r].rate, bare[r].rate, ratioRaw[r], ratioBare[r])
			if baseBin != "" {
				line += fmt.Sprintf("; base webserver %.0f docs/s, %.2f of raw", baseWS[r].rate, baseRatioRaw[r])
			}
			b.Log(line)
		}
		perDoc := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
		b.ReportMetric(medianOf(ws, func(d drain) float64 { return d.rate }), "webserver_docs/s")
		b.ReportMetric(medianOf(ws, func(d drain) float64 { return perDoc(d.cpu) }), "webserver_cpu_µs/doc")
		b.ReportMetric(medianOf(ws, func(d drain) float64 { return perDoc(d.natsCPU) }), "nats_cpu_µs/doc")
		b.ReportMetric(medianOf(ws, func(d drain) float64 { return d.inFlight }), "bulks_in_flight")
		if ws[0].esCPU > 0 {
			b.ReportMetric(medianOf(ws, func(d drain) float64 { return perDoc(d.esCPU) }), "es_cpu_µs/doc")
		}
		if baseBin != "" {
			b.ReportMetric(medianOf(baseWS, func(d drain) float64 { return d.rate }), "base_webserver_docs/s")
			b.ReportMetric(medianOf(baseWS, func(d drain) float64 { return perDoc(d.cpu) }), "base_webserver_cpu_µs/doc")
			b.ReportMetric(medianOf(baseWS, func(d drain) float64 { return perDoc(d.natsCPU) }), "base_nats_cpu_µs/doc")
			if !only {
				b.ReportMetric(median(baseRatioRaw), "base_ratio_raw")
			}
		}
		if only {
			continue
		}
		b.ReportMetric(ceilingRate, "bulkindexer_docs/s")
		b.ReportMetric(medianOf(ws, func(d drain) float64 { return d.rate })/ceilingRate, "ratio")
		b.ReportMetric(medianOf(raw, func(r rawRun) float64 { return r.rate }), "raw_bulk_docs/s")
		bareRate := medianOf(bare, func(r bareRun) float64 { return r.rate })
		b.ReportMetric(bareRate, "bare_pipeline_docs/s")
		b.ReportMetric(medianOf(bare, func(r bareRun) float64 { return perDoc(r.clientCPU) }), "bare_client_cpu_µs/doc")
		b.ReportMetric(medianOf(bare, func(r bareRun) float64 { return perDoc(r.natsCPU) }), "bare_nats_cpu_µs/doc")
		b.ReportMetric(median(ratioRaw), "ratio_raw")
		b.ReportMetric(median(ratioBare), "ratio_bare")
		b.ReportMetric(bareRate/medianOf(raw, func(r rawRun) float64 { return r.rate }), "bare_ratio_raw")
		if ws[0].esCPU > 0 {
			b.ReportMetric(medianOf(raw, func(r rawRun) float64 { return perDoc(r.esCPU) }), "raw_es_cpu_µs/doc")
		}
	}
}

// medianOf is the median of f over xs.
func medianOf[T any](xs []T, f func(T) float64) float64 {
	vs := make([]float64, len(xs))
	for i, x := range xs {
		vs[i] = f(x)
	}
	return median(vs)
}

// BenchmarkWebserverPeakRSS reports the webserver's peak resident memory while it
// drains a backlog of BENCH_RSS_DOCS messages (default 1,000,000; target ≤ 150 MB).
func BenchmarkWebserverPeakRSS(b *testing.B) {
	n := envInt(b, "BENCH_RSS_DOCS", 1000000)
	esURL := testenv.ElasticsearchURL(b)
	frames := sampleFrames(b, n)
	for b.Loop() {
		natsURL := testenv.StartNATSProcess(b)
		js := testenv.JetStream(b, natsURL, jetstream.WithPublishAsyncMaxPending(4096))
		publishBacklog(b, js, frames)
		ws, admin := startBenchWebserver(b, binary(b, "webserver"), natsURL, esURL, testenv.IndexPrefix(b, esURL))
		waitDrained(b, js, uint64(n), admin)
		rss, err := ws.PeakRSS()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(rss)/(1<<20), "peak_rss_MiB")
		ws.Stop()
	}
}

type frame struct {
	subject string
	msgID   string
	data    []byte
}

func sampleFrames(b *testing.B, n int) []frame {
	gen := sample.Generator{Start: time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC), Interval: time.Second, Cameras: 8}
	out := make([]frame, n)
	size := 0
	for i := range out {
		f := gen.Next()
		data, err := json.Marshal(f)
		if err != nil {
			b.Fatal(err)
		}
		out[i] = frame{subject: f.Subject("annotations"), msgID: f.MsgID(), data: data}
		size += len(data)
	}
	b.Logf("%d frames, %d bytes on average", n, size/n)
	return out
}

// drain is what one run of the webserver measured: its rate, and the processor
// time of the webserver, nats-server and Elasticsearch (0 if not local) while it
// drained the backlog.
type drain struct {
	rate                float64
	cpu, natsCPU, esCPU time.Duration
	// inFlight is how many bulk requests Elasticsearch had on average: at
	// BULK_WORKERS it was never left waiting for the webserver.
	inFlight float64
	bulks    string // how many bulk requests, how large, how long
}

// metricValue reads one unlabelled sample from the webserver's /metrics.
func metricValue(b *testing.B, admin, name string) float64 {
	res, err := http.Get(admin + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
	}
	b.Fatalf("no %s in the webserver's metrics", name)
	return 0
}

func webserverDrain(b *testing.B, esURL, bin string, frames []frame) drain {
	var natsArgs []string
	natsProfile := ""
	if os.Getenv("BENCH_PPROF") != "" {
		natsProfile = testenv.FreeAddr(b)
		_, port, _ := net.SplitHostPort(natsProfile)
		natsArgs = []string{"--profile", port}
	}
	natsURL, natsProc := testenv.StartNATSServerProcess(b, natsArgs...)
	defer natsProc.Stop()
	js := testenv.JetStream(b, natsURL, jetstream.WithPublishAsyncMaxPending(4096))
	publishBacklog(b, js, frames)
	es := cpuOf(b, testenv.ElasticsearchPID(esURL))
	natsBefore := cpuOf(b, natsProc)
	start := time.Now()
	prefix := testenv.IndexPrefix(b, esURL)
	defer deleteIndices(esURL, prefix)
	ws, admin := startBenchWebserver(b, bin, natsURL, esURL, prefix)
	profiled := profileCPU(b, map[string]string{"webserver": admin, "nats-server": natsProfile})
	waitDrained(b, js, uint64(len(frames)), admin)
	elapsed := time.Since(start)
	d := drain{rate: float64(len(frames)) / elapsed.Seconds(), esCPU: es(), natsCPU: natsBefore()}
	bulkSeconds := metricValue(b, admin, "webserver_bulk_request_duration_seconds_sum")
	d.inFlight = bulkSeconds / elapsed.Seconds()
	bulks := metricValue(b, admin, "webserver_bulk_request_duration_seconds_count")
	d.bulks = fmt.Sprintf("%.0f bulk requests of %.0f documents taking %.0f ms on average",
		bulks, metricValue(b, admin, "webserver_bulk_request_documents_sum")/bulks, 1000*bulkSeconds/bulks)
	profiled()
	cpu, err := ws.CPUTime()
	if err != nil {
		b.Fatal(err)
	}
	d.cpu = cpu
	ws.Stop()
	return d
}

// cpuOf starts counting the processor time of a process (a *testenv.Process or a
// pid; 0 counts nothing) and returns what reads the time used since.
func cpuOf(b *testing.B, p any) func() time.Duration {
	read := func() time.Duration { return 0 }
	switch p := p.(type) {
	case *testenv.Process:
		read = func() time.Duration {
			d, err := p.CPUTime()
			if err != nil {
				b.Fatal(err)
			}
			return d
		}
	case int:
		if p != 0 {
			read = func() time.Duration {
				d, err := testenv.CPUTimeOf(p)
				if err != nil {
					b.Fatal(err)
				}
				return d
			}
		}
	}
	before := read()
	return func() time.Duration { return read() - before }
}

// profileCPU saves a CPU profile of each process whose pprof address is given
// (name → host:port; an empty address is skipped) to BENCH_PPROF/name-cpu.pprof,
// if BENCH_PPROF is set, over BENCH_PPROF_SECONDS (default 4) from now; the
// returned function waits for them.
func profileCPU(b *testing.B, addrs map[string]string) (wait func()) {
	dir := os.Getenv("BENCH_PPROF")
	if dir == "" {
		return func() {}
	}
	seconds := envInt(b, "BENCH_PPROF_SECONDS", 4)
	var wg sync.WaitGroup
	errs := make(chan error, len(addrs))
	for name, addr := range addrs {
		if addr == "" {
			continue
		}
		url := addr
		if !strings.HasPrefix(url, "http") {
			url = "http://" + url
		}
		wg.Go(func() {
			testenv.WaitHTTP(b, url+"/debug/pprof/", 30*time.Second)
			if err := saveProfile(url+"/debug/pprof/profile?seconds="+strconv.Itoa(seconds), filepath.Join(dir, name+"-cpu.pprof")); err != nil {
				errs <- fmt.Errorf("cpu profile of %s: %w", name, err)
			}
		})
	}
	return func() {
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Error(err)
		}
	}
}

func saveProfile(url, path string) error {
	res, err := http.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, res.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startBenchWebserver runs the webserver with its defaults, plus any settings in
// BENCH_WEBSERVER_ENV (space-separated KEY=value pairs) for tuning experiments.
func startBenchWebserver(b *testing.B, bin, natsURL, esURL, prefix string) (*testenv.Process, string) {
	admin := testenv.FreeAddr(b)
	env := map[string]string{
		"NATS_URL":          natsURL,
		"ELASTICSEARCH_URL": esURL,
		"ES_INDEX_PREFIX":   prefix,
		"ES_INDEX_REPLICAS": "0",
		"ADMIN_ADDR":        admin,
		"LOG_LEVEL":         "warn",
		// The frames are of March 2023: filed by their own time, as in
		// production, not each under its publish time as too old.
		"TIMESTAMP_MAX_PAST": "off",
	}
	if os.Getenv("BENCH_PPROF") != "" {
		env["ADMIN_PPROF"] = "true"
	}
	for _, kv := range strings.Fields(os.Getenv("BENCH_WEBSERVER_ENV")) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			b.Fatalf("BENCH_WEBSERVER_ENV: %q is not KEY=value", kv)
		}
		env[k] = v
	}
	proc := testenv.StartProcess(b, bin, env)
	return proc, "http://" + admin
}

type bulkTuning struct {
	workers    int
	flushBytes int
}

// buildDocs builds the documents the webserver would store for frames, with the
// same code, as the messages of a stream whose sequences start at 1, published
// 20µs apart (about the rate of publishBacklog): every @nats.published differs,
// as in a real stream, which matters to the cost of indexing it.
func buildDocs(b *testing.B, frames []frame) []document.Document {
	docs := make([]document.Document, len(frames))
	published := time.Now()
	for i, f := range frames {
		var err error
		docs[i], err = document.Build(f.data, document.Source{Subject: f.subject, Stream: "ANNOTATIONS", Sequence: uint64(i + 1),
			Published: published.Add(time.Duration(i) * 20 * time.Microsecond), MsgID: f.msgID},
			document.Options{TimestampField: "timestamp", DefaultZone: time.UTC})
		if err != nil {
			b.Fatal(err)
		}
	}
	return docs
}

// benchTemplate is the index template the webserver installs in the benchmark:
// its defaults, with the webserver's replicas (0) and the shards, refresh
// interval and nested fields of BENCH_WEBSERVER_ENV.
func benchTemplate(b *testing.B) store.TemplateSettings {
	ts := store.TemplateSettings{Shards: 1, Replicas: 0, RefreshInterval: "1s", IgnoreAbove: 1024, Nested: []string{"labels"}}
	for _, kv := range strings.Fields(os.Getenv("BENCH_WEBSERVER_ENV")) {
		switch k, v, _ := strings.Cut(kv, "="); k {
		case "ES_INDEX_SHARDS":
			n, err := strconv.Atoi(v)
			if err != nil {
				b.Fatalf("BENCH_WEBSERVER_ENV: %s", kv)
			}
			ts.Shards = n
		case "ES_INDEX_REFRESH_INTERVAL":
			ts.RefreshInterval = v
		case "ES_NESTED_FIELDS":
			ts.Nested = strings.Split(v, ",")
			if v == "none" {
				ts.Nested = nil
			}
		}
	}
	return ts
}

// freshStore is a store under a prefix of its own, with the template installed.
func freshStore(b *testing.B, esURL string, tmpl store.TemplateSettings) (*store.Store, string) {
	prefix := testenv.IndexPrefix(b, esURL)
	st, err := store.New(store.Config{Addresses: []string{esURL}, IndexPrefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	if err := st.EnsureTemplate(context.Background(), tmpl); err != nil {
		b.Fatal(err)
	}
	return st, prefix
}

// deleteIndices drops a run's indices at once, so that the node indexes every run
// with the same amount of data around.
func deleteIndices(esURL, prefix string) {
	req, _ := http.NewRequest(http.MethodDelete, esURL+"/"+prefix+"-*", nil)
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
	}
}

// ceiling bulk-loads the documents with an esutil.BulkIndexer into a fresh index.
func ceiling(b *testing.B, esURL string, docs []document.Document, tmpl store.TemplateSettings, tuning bulkTuning) float64 {
	st, prefix := freshStore(b, esURL, tmpl)
	defer deleteIndices(esURL, prefix)
	ctx := context.Background()
	es, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: []string{esURL}})
	if err != nil {
		b.Fatal(err)
	}
	var failed int
	bi, err := esutil.NewBulkIndexer(esutil.BulkIndexerConfig{Client: es, NumWorkers: tuning.workers, FlushBytes: tuning.flushBytes, FlushInterval: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for _, d := range docs {
		err := bi.Add(ctx, esutil.BulkIndexerItem{
			Action: "create", Index: st.IndexName(d.Timestamp), DocumentID: d.ID, Body: bytes.NewReader(d.Body),
			OnFailure: func(context.Context, esutil.BulkIndexerItem, esutil.BulkIndexerResponseItem, error) { failed++ },
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := bi.Close(ctx); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	if failed > 0 || bi.Stats().NumFlushed != uint64(len(docs)) {
		b.Fatalf("ceiling run: %d failures, %d of %d stored", failed, bi.Stats().NumFlushed, len(docs))
	}
	return float64(len(docs)) / elapsed.Seconds()
}

// rawRun is one raw bulk load: its rate and Elasticsearch's processor time.
type rawRun struct {
	rate                    float64
	esCPU                   time.Duration
	perRequest, concurrency int
}

// rawBulkGrid is the best rawBulk over a grid of request sizes × concurrency.
func rawBulkGrid(b *testing.B, esURL string, docs []document.Document, tmpl store.TemplateSettings) rawRun {
	var best rawRun
	for _, size := range []int{1000, 5000, 10000} {
		line := fmt.Sprintf("raw bulk of %d documents per request:", size)
		for _, concurrency := range []int{1, 2, 4} {
			run := rawBulk(b, esURL, docs, tmpl, size, concurrency, nil)
			line += fmt.Sprintf(" %d at once %.0f docs/s (%.0f ms per request);", concurrency, run.rate, 1000*float64(size*concurrency)/run.rate)
			if run.rate > best.rate {
				best = run
			}
		}
		b.Log(line)
	}
	return best
}

// rawBulk is Elasticsearch's own limit for these documents: the bodies are
// encoded by the store before the clock starts, then concurrency goroutines POST
// them with plain net/http, asking only for errors back. remap, if not nil,
// changes the index template of the run's prefix before the first document.
func rawBulk(b *testing.B, esURL string, docs []document.Document, tmpl store.TemplateSettings, perRequest, concurrency int, remap func(prefix string)) rawRun {
	st, prefix := freshStore(b, esURL, tmpl)
	defer deleteIndices(esURL, prefix)
	if remap != nil {
		remap(prefix)
	}
	var bodies [][]byte
	for chunk := range slices.Chunk(docs, perRequest) {
		items := make([]pipeline.Item, len(chunk))
		for i, d := range chunk {
			items[i] = pipeline.Item{ID: d.ID, Timestamp: d.Timestamp, Body: d.Body}
		}
		bodies = append(bodies, st.BulkBody(items))
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}}
	url := esURL + "/_bulk?filter_path=errors,items.*.error"
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	es := cpuOf(b, testenv.ElasticsearchPID(esURL))
	start := time.Now()
	for range concurrency {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(bodies); i = int(next.Add(1)) - 1 {
				res, err := client.Post(url, "application/x-ndjson", bytes.NewReader(bodies[i]))
				if err != nil {
					errs <- err
					return
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != http.StatusOK || !bytes.HasPrefix(body, []byte(`{"errors":false`)) {
					errs <- fmt.Errorf("raw bulk: %s %v %.300s", res.Status, err, body)
					return
				}
			}
		})
	}
	wg.Wait()
	run := rawRun{rate: float64(len(docs)) / time.Since(start).Seconds(), esCPU: es(), perRequest: perRequest, concurrency: concurrency}
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return run
}

// barePipeline is the least any pipeline from JetStream into Elasticsearch can
// do with the guarantees the webserver keeps: it drains a backlog of frames
// through a durable consumer configured as the webserver's, in fetches of
// perRequest messages, 2 bulk requests at once, and acks each message on its
// own once its bulk succeeded. Everything else the webserver does per message
// (validating, building the document, encoding the action line, reading each
// item's outcome) is done before the clock starts: the bulk body of a batch is
// the concatenation of the documents' pre-encoded lines. Its rate, beside the
// raw bulk limit, is what NATS itself costs on this machine.
func barePipeline(b *testing.B, esURL string, frames []frame, docs []document.Document, tmpl store.TemplateSettings, perRequest int) bareRun {
	st, prefix := freshStore(b, esURL, tmpl)
	defer deleteIndices(esURL, prefix)
	lines := make([][]byte, len(docs)) // by stream sequence - 1
	for i, d := range docs {
		lines[i] = st.BulkBody([]pipeline.Item{{ID: d.ID, Timestamp: d.Timestamp, Body: d.Body}})
	}
	natsURL, natsProc := testenv.StartNATSServerProcess(b)
	defer natsProc.Stop()
	js := testenv.JetStream(b, natsURL, jetstream.WithPublishAsyncMaxPending(4096))
	publishBacklog(b, js, frames)
	ctx := context.Background()
	const workers = 2
	self, natsCPU := cpuOf(b, os.Getpid()), cpuOf(b, natsProc)
	start := time.Now()
	cons, err := js.CreateOrUpdateConsumer(ctx, "ANNOTATIONS", jetstream.ConsumerConfig{
		Durable: "bare", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxAckPending: perRequest * (workers + 2), MaxDeliver: -1,
	})
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	url := esURL + "/_bulk?filter_path=errors,items.*.error"
	batches := make(chan []jetstream.Msg)
	errs := make(chan error, workers+1)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var body []byte
			for msgs := range batches {
				body = body[:0]
				for _, m := range msgs {
					meta, err := m.Metadata()
					if err != nil {
						errs <- err
						return
					}
					body = append(body, lines[meta.Sequence.Stream-1]...)
				}
				res, err := client.Post(url, "application/x-ndjson", bytes.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				reply, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != http.StatusOK || !bytes.HasPrefix(reply, []byte(`{"errors":false`)) {
					errs <- fmt.Errorf("bare pipeline bulk: %s %v %.300s", res.Status, err, reply)
					return
				}
				for _, m := range msgs {
					if err := m.Ack(); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	for fetched := 0; fetched < len(frames); {
		res, err := cons.Fetch(perRequest, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			b.Fatal(err)
		}
		msgs := make([]jetstream.Msg, 0, perRequest)
		for m := range res.Messages() {
			msgs = append(msgs, m)
		}
		fetched += len(msgs)
		select {
		case batches <- msgs:
		case err := <-errs:
			b.Fatal(err)
		}
	}
	close(batches)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if info.AckFloor.Stream >= uint64(len(frames)) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return bareRun{rate: float64(len(frames)) / time.Since(start).Seconds(), clientCPU: self(), natsCPU: natsCPU()}
}

// bareRun is one run of the bare pipeline: its rate, and the processor time of
// its client (this process) and of nats-server.
type bareRun struct {
	rate               float64
	clientCPU, natsCPU time.Duration
}

// publishBacklog creates the stream as the webserver would and fills it.
func publishBacklog(b *testing.B, js jetstream.JetStream, frames []frame) {
	i := 0
	publishSource(b, js, len(frames), sourceFunc(func() (publish.Message, error) {
		if i == len(frames) {
			return publish.Message{}, io.EOF
		}
		f := frames[i]
		i++
		return publish.Message{Subject: f.subject, ID: f.msgID, Data: f.data}, nil
	}))
}

// publishSource creates the stream as the webserver would and fills it with the n
// messages of src: generated as they are sent, when a backlog held in memory
// would weigh too much.
func publishSource(b *testing.B, js jetstream.JetStream, n int, src publish.Source) {
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ANNOTATIONS", Subjects: []string{"annotations.>"}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	stored, _, err := publish.Run(ctx, js, src, publish.Options{Window: 1024}, func() {})
	if err != nil || stored != n {
		b.Fatalf("backlog: %d of %d stored: %v", stored, n, err)
	}
}

type sourceFunc func() (publish.Message, error)

func (f sourceFunc) Next() (publish.Message, error) { return f() }

// waitDrained waits until the durable consumer has acked n messages.
func waitDrained(b *testing.B, js jetstream.JetStream, n uint64, admin string) {
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		if cons, err := js.Consumer(ctx, "ANNOTATIONS", "webserver"); err == nil {
			if info, err := cons.Info(ctx); err == nil && info.AckFloor.Stream >= n && info.NumAckPending == 0 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatalf("webserver did not drain %d messages (admin %s)", n, admin)
}
