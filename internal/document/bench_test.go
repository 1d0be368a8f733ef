package document

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/sample"
)

func BenchmarkBuild(b *testing.B) {
	gen := sample.Generator{Start: time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC), Interval: time.Second, Cameras: 4}
	raw, err := json.Marshal(gen.Next())
	if err != nil {
		b.Fatal(err)
	}
	src := Source{Subject: "annotations.cam-01", Stream: "ANNOTATIONS", Sequence: 12345, Published: time.Now(), MsgID: "cam-01-1"}
	opts := Options{TimestampField: "timestamp", DefaultZone: time.UTC}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(raw, src, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestore is what every document the backend serves pays for the
// mapping policy: a document with nothing set aside is only searched for the
// marker.
func BenchmarkRestore(b *testing.B) {
	gen := sample.Generator{Start: time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC), Interval: time.Second, Cameras: 4}
	raw, err := json.Marshal(gen.Next())
	if err != nil {
		b.Fatal(err)
	}
	src := Source{Subject: "annotations.cam-01", Stream: "ANNOTATIONS", Sequence: 12345, Published: time.Now(), MsgID: "cam-01-1"}
	doc, err := Build(raw, src, Options{TimestampField: "timestamp", DefaultZone: time.UTC})
	if err != nil {
		b.Fatal(err)
	}
	aside, _ := SetAside(doc.Body, "failed to parse field [labels] of type [long]")
	for _, c := range []struct {
		name string
		doc  []byte
	}{{"nothing set aside", doc.Body}, {"labels set aside", aside}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.doc)))
			b.ReportAllocs()
			for b.Loop() {
				Restore(c.doc, nil)
			}
		})
	}
}
