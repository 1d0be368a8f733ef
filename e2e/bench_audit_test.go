//go:build integration && bench

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/audit"
	"github.com/annotated-data/pipeline/internal/natsaudit"
	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// BenchmarkAudit measures `webserver audit` over N messages and their N documents
// (BENCH_AUDIT_DOCS, default 1,000,000): once clean, and once with 1,000 documents
// deleted at random. It reports the seconds and the requests of each audit; the
// requests show that the work grows with the problems, not the documents. Loading
// the data is not timed. Run it with `make bench`.
func BenchmarkAudit(b *testing.B) {
	n := envInt(b, "BENCH_AUDIT_DOCS", 1000000)
	esURL := testenv.ElasticsearchURL(b)
	prefix := testenv.IndexPrefix(b, esURL)
	js := testenv.JetStream(b, testenv.StartNATSProcess(b))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()

	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ANNOTATIONS", Subjects: []string{"annotations.>"}}); err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"camera_id":"cam-01","frame":1}`)
	for start := 0; start < n; start += 4000 {
		futures := make([]jetstream.PubAckFuture, 0, 4000)
		for range min(4000, n-start) {
			f, err := js.PublishAsync("annotations.cam-01", payload)
			if err != nil {
				b.Fatal(err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
	}
	// The documents the webserver would have stored: id ANNOTATIONS-<seq>, one
	// index, each with its @nats origin.
	day := time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC)
	testenv.IndexDocuments(b, esURL, prefix, n, func(i int) pipeline.Item {
		seq := i + 1
		ts := day.Add(time.Duration(i) * 50 * time.Millisecond)
		body := fmt.Appendf(nil, `{"@timestamp":%q,"camera_id":"cam-01","frame":1,"@nats":{"subject":"annotations.cam-01","stream":"ANNOTATIONS","seq":%d,"published":%q}}`,
			ts.Format(time.RFC3339Nano), seq, ts.Format(time.RFC3339Nano))
		return pipeline.Item{ID: fmt.Sprintf("ANNOTATIONS-%d", seq), Timestamp: ts, Body: body}
	})
	st, err := store.New(store.Config{Addresses: []string{esURL}, IndexPrefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	auditor := &audit.Auditor{
		Stream: natsaudit.JetStream{JS: js, Stream: "ANNOTATIONS", DLQStream: "ANNOTATIONS_DLQ", Durable: "webserver"},
		Index:  st, Name: "ANNOTATIONS", BucketWidth: 16384,
	}
	run := func(b *testing.B, wantMissing int64) {
		for b.Loop() {
			start := time.Now()
			r, err := auditor.Audit(ctx, audit.Window{})
			took := time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			if r.Messages != int64(n) || r.Missing != wantMissing || len(r.IndexedTwice) != 0 {
				b.Fatalf("audit: %d messages, %d missing, %d doubled; want %d, %d, 0", r.Messages, r.Missing, len(r.IndexedTwice), n, wantMissing)
			}
			b.ReportMetric(took.Seconds(), "audit_s")
			b.ReportMetric(float64(r.Requests), "requests")
		}
	}
	b.Run(fmt.Sprintf("clean/%d", n), func(b *testing.B) { run(b, 0) })

	rng := rand.New(rand.NewPCG(1000, uint64(n)))
	deleted := map[int]bool{}
	for len(deleted) < min(1000, n/2) {
		deleted[1+rng.IntN(n)] = true
	}
	var bulk bytes.Buffer
	for seq := range deleted {
		fmt.Fprintf(&bulk, `{"delete":{"_index":%q,"_id":"ANNOTATIONS-%d"}}`+"\n", prefix+"-2023.03.09", seq)
	}
	testenv.ESJSON(b, http.MethodPost, esURL+"/_bulk?refresh=true", bulk.Bytes(), nil)
	b.Run(fmt.Sprintf("missing-%d/%d", len(deleted), n), func(b *testing.B) { run(b, int64(len(deleted))) })
}
