package store

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/document"
	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/sample"
)

// benchItems are n of the webserver's own documents, built as it builds them.
func benchItems(b *testing.B, n int) []pipeline.Item {
	gen := sample.Generator{Start: time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC), Interval: time.Second, Cameras: 8}
	items := make([]pipeline.Item, n)
	for i := range items {
		f := gen.Next()
		raw, err := json.Marshal(f)
		if err != nil {
			b.Fatal(err)
		}
		doc, err := document.Build(raw, document.Source{Subject: f.Subject("annotations"), Stream: "ANNOTATIONS", Sequence: uint64(i + 1), Published: time.Now(), MsgID: f.MsgID()},
			document.Options{TimestampField: "timestamp", DefaultZone: time.UTC})
		if err != nil {
			b.Fatal(err)
		}
		items[i] = pipeline.Item{ID: doc.ID, Timestamp: doc.Timestamp, Body: doc.Body}
	}
	return items
}

// BenchmarkBulkBody is the cost of encoding a batch of 5,000 documents into a
// bulk request body, per document.
func BenchmarkBulkBody(b *testing.B) {
	items := benchItems(b, 5000)
	s, err := New(Config{Addresses: []string{"http://127.0.0.1:9200"}, IndexPrefix: "annotations"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.BulkBody(items)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1000/float64(b.N*len(items)), "µs/doc")
}

// BenchmarkBulkResponse is the cost of reading the outcomes of a bulk response
// for 5,000 documents that were all created, per document.
func BenchmarkBulkResponse(b *testing.B) {
	const n = 5000
	var sb strings.Builder
	sb.WriteString(`{"errors":false,"items":[`)
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"create":{"status":201}}`)
	}
	sb.WriteString(`]}`)
	resp := []byte(sb.String())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeBulkResponse(bytes.NewReader(resp), n); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1000/float64(b.N*n), "µs/doc")
}
