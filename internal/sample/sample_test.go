package sample

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestGeneratorIsDeterministicAndRealisticallySized(t *testing.T) {
	start := time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC)
	a := Generator{Start: start, Interval: 10 * time.Second, Cameras: 4}
	b := Generator{Start: start, Interval: 10 * time.Second, Cameras: 4}
	total := 0
	for i := range 1000 {
		fa, fb := a.Next(), b.Next()
		if !reflect.DeepEqual(fa, fb) {
			t.Fatalf("frame %d differs between two generators with the same settings", i)
		}
		data, _ := json.Marshal(fa)
		total += len(data)
	}
	// The benchmarks promise frames of about 300 to 500 bytes.
	if avg := total / 1000; avg < 300 || avg > 500 {
		t.Errorf("frames average %d bytes, want 300-500", avg)
	}
	first := Generator{Start: start, Interval: 10 * time.Second, Cameras: 4}
	f := first.Next()
	if f.CameraID != "cam-01" || f.Frame != 1 || f.Timestamp != "2023-03-09T19:40:00.000Z" || f.MsgID() != "cam-01-1@2023-03-09T19:40:00.000Z" {
		t.Errorf("first frame = %s #%d at %s (id %s)", f.CameraID, f.Frame, f.Timestamp, f.MsgID())
	}
	for range 3 {
		f = first.Next()
	}
	if f = first.Next(); f.CameraID != "cam-01" || f.Frame != 2 || f.Timestamp != "2023-03-09T19:40:10.000Z" {
		t.Errorf("fifth frame = %s #%d at %s, want cam-01 #2 at 19:40:10", f.CameraID, f.Frame, f.Timestamp)
	}
}
