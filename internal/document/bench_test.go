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
