//go:build integration && bench

package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// BenchmarkWebserverScaleOut drains the same backlog of BENCH_DOCS messages
// (default 200,000) with 1, 2 and 3 webserver replicas on one durable consumer,
// writing to the same Elasticsearch, and reports docs/s for each. Replicas share
// the work through the durable, not by partitioning: where the figures stop
// growing, Elasticsearch (or, on a small machine, the processor the replicas share
// with it) is the limit, not the webserver. Run it with `make bench`.
func BenchmarkWebserverScaleOut(b *testing.B) {
	n := envInt(b, "BENCH_DOCS", 200000)
	esURL := testenv.ElasticsearchURL(b)
	frames := sampleFrames(b, n)
	binary(b, "webserver") // built before any clock starts

	// Warm the node's JIT and caches so the first run does not pay for it alone.
	rawBulk(b, esURL, buildDocs(b, frames[:min(len(frames), 20000)]), benchTemplate(b), 5000, 2, nil)

	for b.Loop() {
		for replicas := 1; replicas <= 3; replicas++ {
			rate := scaleOutDrain(b, esURL, frames, replicas)
			b.Logf("%d webserver replica(s) on one durable: %.0f docs/s", replicas, rate)
			b.ReportMetric(rate, fmt.Sprintf("docs/s_%d_replicas", replicas))
		}
	}
}

// scaleOutDrain publishes frames to a fresh NATS server, then times replicas
// webservers, started together, until the durable has acked every message.
func scaleOutDrain(b *testing.B, esURL string, frames []frame, replicas int) float64 {
	natsURL := testenv.StartNATSProcess(b)
	js := testenv.JetStream(b, natsURL, jetstream.WithPublishAsyncMaxPending(4096))
	publishBacklog(b, js, frames)
	env := map[string]string{
		"NATS_URL":          natsURL,
		"ELASTICSEARCH_URL": esURL,
		"ES_INDEX_PREFIX":   testenv.IndexPrefix(b, esURL), // one set of indices for all replicas
		"ES_INDEX_REPLICAS": "0",
		"LOG_LEVEL":         "warn",
		// The frames are of March 2023, older than the default window.
		"TIMESTAMP_MAX_PAST": "off",
		// The cap is the durable's, shared by every replica: raised with their
		// number, as docs/operating.md's "Scaling out" says, or added replicas only split
		// one replica's window. 20,000 is one replica's default (5,000 × (2 + 2)).
		"NATS_MAX_ACK_PENDING": fmt.Sprint(replicas * 20000),
	}
	start := time.Now()
	var procs []*testenv.Process
	for range replicas {
		env["ADMIN_ADDR"] = testenv.FreeAddr(b)
		procs = append(procs, testenv.StartProcess(b, binary(b, "webserver"), env))
	}
	waitDrained(b, js, uint64(len(frames)), env["ADMIN_ADDR"])
	elapsed := time.Since(start)
	for _, p := range procs {
		p.Stop()
	}
	return float64(len(frames)) / elapsed.Seconds()
}
