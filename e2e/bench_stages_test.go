//go:build integration && bench

package e2e

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/document"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// BenchmarkIngestStageNATS measures the NATS side of ingestion alone, per
// message, in processor time of the client (this process) and of nats-server,
// draining a backlog of BENCH_DOCS frames the way the webserver does (Fetch of
// 5,000 at a time):
//
//	fetch:      an AckNone consumer, so nothing but the delivery;
//	fetch+ack:  an explicit-ack consumer and one Ack per message, as the webserver;
//	fetch+meta: the same, also reading each message's metadata and headers
//	            (what the webserver reads to build the document);
//	fetch+ackall: an AckAll consumer and one ack per batch, for comparison
//	            only: with several replicas on one durable, AckAll would settle
//	            messages that another replica still holds.
//
// The difference between the first two is the cost of individual acks; the one
// between the second and the last, the most any way of acknowledging could save.
func BenchmarkIngestStageNATS(b *testing.B) {
	n := envInt(b, "BENCH_DOCS", 200000)
	frames := sampleFrames(b, n)
	for b.Loop() {
		natsURL, natsProc := testenv.StartNATSServerProcess(b)
		js := testenv.JetStream(b, natsURL, jetstream.WithPublishAsyncMaxPending(4096))
		publishBacklog(b, js, frames)
		for _, mode := range []string{"fetch", "fetch+ack", "fetch+meta+ack", "fetch+ackall"} {
			client, server, wall := natsDrain(b, js, natsProc, mode, n)
			b.Logf("%s: %.0f msgs/s, client %.2f µs/msg, nats-server %.2f µs/msg", mode, float64(n)/wall.Seconds(),
				perMsg(client, n), perMsg(server, n))
			b.ReportMetric(perMsg(client, n), mode+"_client_µs/msg")
			b.ReportMetric(perMsg(server, n), mode+"_server_µs/msg")
		}
	}
}

func perMsg(d time.Duration, n int) float64 { return float64(d.Nanoseconds()) / 1000 / float64(n) }

// natsDrain fetches every message of the stream through a new durable consumer
// and returns the processor time of this process and of nats-server, and the time
// it took.
func natsDrain(b *testing.B, js jetstream.JetStream, natsProc *testenv.Process, mode string, n int) (client, server, wall time.Duration) {
	ctx := context.Background()
	cfg := jetstream.ConsumerConfig{Durable: "stage-" + strings.NewReplacer("+", "-").Replace(mode), AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20000, MaxDeliver: -1, AckWait: time.Minute}
	switch mode {
	case "fetch":
		cfg.AckPolicy = jetstream.AckNonePolicy
	case "fetch+ackall":
		cfg.AckPolicy = jetstream.AckAllPolicy
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "ANNOTATIONS", cfg)
	if err != nil {
		b.Fatal(err)
	}
	serverCPU := cpuOf(b, natsProc)
	clientCPU := selfCPU(b)
	start := time.Now()
	got := 0
	for got < n {
		res, err := cons.Fetch(5000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			b.Fatal(err)
		}
		var last jetstream.Msg
		for m := range res.Messages() {
			got++
			last = m
			switch mode {
			case "fetch+meta+ack":
				if _, err := m.Metadata(); err != nil {
					b.Fatal(err)
				}
				_ = m.Headers().Get(jetstream.MsgIDHeader)
				fallthrough
			case "fetch+ack":
				if err := m.Ack(); err != nil {
					b.Fatal(err)
				}
			}
		}
		if mode == "fetch+ackall" && last != nil {
			if err := last.Ack(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if mode != "fetch" {
		// Settled on the server too: the ack floor has reached the last message.
		for {
			info, err := cons.Info(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if info.AckFloor.Stream >= uint64(n) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return clientCPU(), serverCPU(), time.Since(start)
}

// selfCPU starts counting this process's processor time.
func selfCPU(b *testing.B) func() time.Duration {
	read := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before := read()
	return func() time.Duration { return read() - before }
}

// BenchmarkIngestStageMapping measures what the fields the webserver adds cost
// Elasticsearch: the raw bulk rate (5,000 per request, 2 at once, as the
// webserver sends them) and Elasticsearch's processor time per document for
//
//	full:      the documents as stored, with the template as installed;
//	no_@nats:  the same documents without @nats;
//	unindexed: @nats.stream and @nats.published not indexed, with doc values
//	           (still sortable, aggregatable and searchable, slowly);
//	source_only: @nats.stream and @nats.published in _source only;
//	flat_labels: labels as plain objects rather than nested (ES_NESTED_FIELDS=none).
//
// The variants take turns, three rounds, and each reports its median.
func BenchmarkIngestStageMapping(b *testing.B) {
	n := envInt(b, "BENCH_DOCS", 200000)
	esURL := testenv.ElasticsearchURL(b)
	docs := buildDocs(b, sampleFrames(b, n))
	bare := make([]document.Document, len(docs))
	for i, d := range docs {
		bare[i] = d
		cut := bytes.LastIndex(d.Body, []byte(`,"`+document.OriginKey+`":`))
		bare[i].Body = append(slices.Clip(d.Body[:cut]), '}')
	}
	tmpl := benchTemplate(b)
	// remap changes the template installed under prefix: edit gets its mapping's
	// properties.
	remap := func(prefix string, edit func(properties map[string]any)) {
		var tpl struct {
			IndexTemplates []struct {
				IndexTemplate map[string]any `json:"index_template"`
			} `json:"index_templates"`
		}
		testenv.ESJSON(b, http.MethodGet, esURL+"/_index_template/"+prefix, nil, &tpl)
		t := tpl.IndexTemplates[0].IndexTemplate
		edit(t["template"].(map[string]any)["mappings"].(map[string]any)["properties"].(map[string]any))
		testenv.ESJSON(b, http.MethodPut, esURL+"/_index_template/"+prefix, t, nil)
	}
	unindexed := func(docValues bool, fields ...string) func(prefix string) {
		return func(prefix string) {
			remap(prefix, func(props map[string]any) {
				nats := props["@nats"].(map[string]any)["properties"].(map[string]any)
				for _, f := range fields {
					m := nats[f].(map[string]any)
					m["index"], m["doc_values"] = false, docValues
				}
			})
		}
	}
	// labels as plain objects, as before ES_NESTED_FIELDS: what nested costs.
	flatLabels := func(prefix string) {
		remap(prefix, func(props map[string]any) { delete(props, "labels") })
	}
	variants := []struct {
		name  string
		docs  []document.Document
		remap func(prefix string)
	}{
		{"full", docs, nil},
		{"no_@nats", bare, nil},
		{"unindexed", docs, unindexed(true, "stream", "published")},
		{"source_only", docs, unindexed(false, "stream", "published")},
		{"flat_labels", docs, flatLabels},
	}
	rawBulk(b, esURL, docs[:min(len(docs), 20000)], tmpl, 5000, 2, nil) // warm up
	for b.Loop() {
		rates := make([][]float64, len(variants))
		cpus := make([][]float64, len(variants))
		for round := range 3 {
			for i, v := range variants {
				run := rawBulk(b, esURL, v.docs, tmpl, 5000, 2, v.remap)
				b.Logf("round %d, %s: %.0f docs/s, Elasticsearch %.1f µs/doc", round+1, v.name, run.rate, perMsg(run.esCPU, n))
				rates[i] = append(rates[i], run.rate)
				cpus[i] = append(cpus[i], perMsg(run.esCPU, n))
			}
		}
		for i, v := range variants {
			b.ReportMetric(median(rates[i]), v.name+"_docs/s")
			b.ReportMetric(median(cpus[i]), v.name+"_es_cpu_µs/doc")
		}
	}
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}
