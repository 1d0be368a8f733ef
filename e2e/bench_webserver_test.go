//go:build integration

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esutil"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/document"
	"github.com/annotated-data/pipeline/internal/publish"
	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// BenchmarkWebserverIngest compares, against the same Elasticsearch in one run:
//
//	(a) the webserver draining a backlog of N messages from JetStream, from start
//	    until every message is acked (so every document is stored), and
//	(b) the same N documents bulk-loaded straight into a fresh index with
//	    esutil.BulkIndexer: the ceiling for a Go client.
//
// It reports docs/s for both and their ratio (target ≥ 0.9). N is BENCH_DOCS
// (default 200,000). Run it with `make bench`.
func BenchmarkWebserverIngest(b *testing.B) {
	n := envInt(b, "BENCH_DOCS", 200000)
	esURL := testenv.ElasticsearchURL(b)
	frames := sampleFrames(b, n)
	binary(b, "webserver") // built before any clock starts

	// Warm the node's JIT and caches so neither side pays for it alone.
	ceiling(b, esURL, frames[:min(len(frames), 20000)], bulkTuning{workers: 2, flushBytes: 5 << 20})

	for b.Loop() {
		webserverRate, cpu := webserverDrain(b, esURL, frames)
		// The ceiling is the best of a few tunings of the BulkIndexer, not one guess.
		var ceilingRate float64
		for _, tuning := range []bulkTuning{{2, 5 << 20}, {2, 2 << 20}, {4, 2 << 20}} {
			rate := ceiling(b, esURL, frames, tuning)
			b.Logf("BulkIndexer with %d workers flushing at %d MiB: %.0f docs/s", tuning.workers, tuning.flushBytes>>20, rate)
			ceilingRate = max(ceilingRate, rate)
		}
		b.ReportMetric(float64(cpu.Microseconds())/float64(n), "webserver_cpu_µs/doc")
		b.ReportMetric(webserverRate, "webserver_docs/s")
		b.ReportMetric(ceilingRate, "bulkindexer_docs/s")
		b.ReportMetric(webserverRate/ceilingRate, "ratio")
	}
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
		ws, admin := startBenchWebserver(b, natsURL, esURL)
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

// webserverDrain returns the webserver's rate and the processor time it used.
func webserverDrain(b *testing.B, esURL string, frames []frame) (float64, time.Duration) {
	natsURL := testenv.StartNATSProcess(b)
	js := testenv.JetStream(b, natsURL, jetstream.WithPublishAsyncMaxPending(4096))
	publishBacklog(b, js, frames)
	start := time.Now()
	ws, admin := startBenchWebserver(b, natsURL, esURL)
	waitDrained(b, js, uint64(len(frames)), admin)
	elapsed := time.Since(start)
	cpu, err := ws.CPUTime()
	if err != nil {
		b.Fatal(err)
	}
	ws.Stop()
	return float64(len(frames)) / elapsed.Seconds(), cpu
}

// startBenchWebserver runs the webserver with its defaults, plus any settings in
// BENCH_WEBSERVER_ENV (space-separated KEY=value pairs) for tuning experiments.
func startBenchWebserver(b *testing.B, natsURL, esURL string) (*testenv.Process, string) {
	admin := testenv.FreeAddr(b)
	env := map[string]string{
		"NATS_URL":          natsURL,
		"ELASTICSEARCH_URL": esURL,
		"ES_INDEX_PREFIX":   testenv.IndexPrefix(b, esURL),
		"ES_INDEX_REPLICAS": "0",
		"ADMIN_ADDR":        admin,
		"LOG_LEVEL":         "warn",
	}
	for _, kv := range strings.Fields(os.Getenv("BENCH_WEBSERVER_ENV")) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			b.Fatalf("BENCH_WEBSERVER_ENV: %q is not KEY=value", kv)
		}
		env[k] = v
	}
	proc := testenv.StartProcess(b, binary(b, "webserver"), env)
	return proc, "http://" + admin
}

type bulkTuning struct {
	workers    int
	flushBytes int
}

// ceiling bulk-loads the same documents the webserver would store, built by the
// same code, with an esutil.BulkIndexer into a fresh index.
func ceiling(b *testing.B, esURL string, frames []frame, tuning bulkTuning) float64 {
	prefix := testenv.IndexPrefix(b, esURL)
	st, err := store.New(store.Config{Addresses: []string{esURL}, IndexPrefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := st.EnsureTemplate(ctx, store.TemplateSettings{Shards: 1, Replicas: 0, RefreshInterval: "1s", IgnoreAbove: 1024}); err != nil {
		b.Fatal(err)
	}
	docs := make([]document.Document, len(frames))
	published := time.Now()
	for i, f := range frames {
		docs[i], err = document.Build(f.data, document.Source{Subject: f.subject, Stream: "ANNOTATIONS", Sequence: uint64(i + 1), Published: published, MsgID: f.msgID},
			document.Options{TimestampField: "timestamp", DefaultZone: time.UTC})
		if err != nil {
			b.Fatal(err)
		}
	}
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

// publishBacklog creates the stream as the webserver would and fills it.
func publishBacklog(b *testing.B, js jetstream.JetStream, frames []frame) {
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ANNOTATIONS", Subjects: []string{"annotations.>"}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	i := 0
	src := sourceFunc(func() (publish.Message, error) {
		if i == len(frames) {
			return publish.Message{}, io.EOF
		}
		f := frames[i]
		i++
		return publish.Message{Subject: f.subject, ID: f.msgID, Data: f.data}, nil
	})
	stored, _, err := publish.Run(ctx, js, src, publish.Options{Window: 1024}, func() {})
	if err != nil || stored != len(frames) {
		b.Fatalf("backlog: %d of %d stored: %v", stored, len(frames), err)
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

func envInt(b *testing.B, key string, def int) int {
	if v := os.Getenv(key); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("%s=%q is not a positive integer", key, v)
		}
		return n
	}
	return def
}
