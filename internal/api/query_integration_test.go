//go:build integration

package api

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// frame is a document of the filter tests: each is built to be told apart
// from the others by some condition.
type frame struct {
	id, at, camera, site, model string
	number                      int
	labels                      []label
}

type label struct {
	Label      string  `json:"label"`
	Confidence float64 `json:"confidence"`
}

func (f frame) body() []byte {
	doc := map[string]any{"@timestamp": f.at, "id": f.id, "camera_id": f.camera, "frame": f.number}
	if f.site != "" {
		doc["site"] = f.site
	}
	if f.model != "" {
		doc["model"] = f.model
	}
	if f.labels != nil {
		doc["labels"] = f.labels
	}
	b, _ := json.Marshal(doc)
	return b
}

func indexFrames(t *testing.T, esURL, prefix string, frames []frame) {
	t.Helper()
	testenv.IndexDocuments(t, esURL, prefix, len(frames), func(i int) pipeline.Item {
		ts, err := time.Parse(time.RFC3339Nano, frames[i].at)
		if err != nil {
			t.Fatal(err)
		}
		return pipeline.Item{ID: frames[i].id, Timestamp: ts, Body: frames[i].body()}
	})
}

// filterBackend is the API over filterFrames, in an index prefix of its own.
func filterBackend(t *testing.T) *backend {
	t.Helper()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	indexFrames(t, esURL, prefix, filterFrames)
	return startBackend(t, esURL, prefix, Config{})
}

const filterRange = "start_date=2023-03-09T19:40:00Z&end_date=2023-03-09T19:45:00Z"

var filterFrames = []frame{
	// A person seen with low confidence beside a car seen with high: no one
	// element is a person at 0.8 or more.
	{id: "mixed", at: "2023-03-09T19:40:00Z", camera: "cam-01", site: "depot-north", model: "yolov8n", number: 1,
		labels: []label{{"person", 0.3}, {"car", 0.9}}},
	{id: "person-high", at: "2023-03-09T19:41:00Z", camera: "cam-02", site: "gate-2", model: "yolov8n", number: 5,
		labels: []label{{"person", 0.92}}},
	{id: "no-labels", at: "2023-03-09T19:42:00Z", camera: "cam-07", site: "gate-2", model: "yolo v8", number: 10},
	{id: "car", at: "2023-03-09T19:43:00Z", camera: "cam-07", site: "loading-bay", model: "yolov8n", number: 100,
		labels: []label{{"car", 0.5}}},
	{id: "bike", at: "2023-03-09T19:44:59.999Z", camera: "cam-10", model: "yolov8n", number: 1000,
		labels: []label{{"bicycle", 0.8}}},
	// Matches most filters, outside the range.
	{id: "next-day", at: "2023-03-10T19:40:00Z", camera: "cam-07", site: "gate-2", model: "yolov8n", number: 10,
		labels: []label{{"person", 0.99}}},
}

// Every construct of q selects exactly its documents, on every document
// endpoint and in the counts, with conditions in braces held to one element.
func TestEachFilterSelectsItsDocumentsEverywhere(t *testing.T) {
	t.Parallel()
	b := filterBackend(t)

	tests := []struct {
		q    string
		want []string
	}{
		{``, []string{"mixed", "person-high", "no-labels", "car", "bike"}},
		{`camera_id:cam-07`, []string{"no-labels", "car"}},
		{`camera_id:(cam-01 or cam-02)`, []string{"mixed", "person-high"}},
		{`camera_id:cam-0*`, []string{"mixed", "person-high", "no-labels", "car"}},
		{`model:"yolo v8"`, []string{"no-labels"}},
		{`frame:10`, []string{"no-labels"}},
		{`frame:ten`, nil}, // a word for a number matches nothing, as in Kibana
		{`frame >= 10`, []string{"no-labels", "car", "bike"}},
		{`frame < 5`, []string{"mixed"}},
		{`frame > 5 and frame <= 100`, []string{"no-labels", "car"}},
		{`site:*`, []string{"mixed", "person-high", "no-labels", "car"}},
		{`not site:*`, []string{"bike"}},
		{`not camera_id:cam-07`, []string{"mixed", "person-high", "bike"}},
		{`camera_id:cam-07 OR site:depot-north`, []string{"mixed", "no-labels", "car"}},
		{`@timestamp >= "2023-03-09T19:42:00"`, []string{"no-labels", "car", "bike"}},
		{`labels:{ label:person and confidence >= 0.8 }`, []string{"person-high"}},
		// Outside braces, each condition may be met by another element.
		{`labels.label:person and labels.confidence >= 0.8`, []string{"mixed", "person-high"}},
		{`labels:{ label:car }`, []string{"mixed", "car"}},
		{`labels:*`, []string{"mixed", "person-high", "car", "bike"}},
		{`(camera_id:cam-07 or camera_id:cam-10) and not labels:{ label:car }`, []string{"no-labels", "bike"}},
		{`camra_id:cam-07`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			query := filterRange + "&q=" + url.QueryEscape(tt.q)
			for _, accept := range []string{"", "text/event-stream"} {
				for _, path := range []string{"/getJsonStream", "/getStream"} {
					if accept != "" && path == "/getJsonStream" {
						continue
					}
					res, body := b.get(path+"?"+query, "Accept", accept)
					if res.StatusCode != http.StatusOK {
						t.Fatalf("%s: %d %s", path, res.StatusCode, body)
					}
					if got := ids(documents(t, res.Header.Get("Content-Type"), body)); !slices.Equal(got, tt.want) {
						t.Errorf("%s (%s) = %v, want %v", path, res.Header.Get("Content-Type"), got, tt.want)
					}
				}
			}
			c := b.counts(query + "&interval=1m")
			if c.Total != int64(len(tt.want)) {
				t.Errorf("getCounts total = %d, want %d", c.Total, len(tt.want))
			}
		})
	}

	t.Run("a field no index maps is named, not silently empty", func(t *testing.T) {
		res, body := b.get("/getStream?"+filterRange+"&q="+url.QueryEscape(`camra_id:cam-07 or labels:{ lable:car }`), "Accept", "text/event-stream")
		if got := res.Header.Get(unknownFieldsHeader); got != "camra_id, labels.lable" {
			t.Errorf("%s = %q, want both misspelt fields", unknownFieldsHeader, got)
		}
		if !strings.HasPrefix(string(body), ": unknown fields, which match nothing: camra_id, labels.lable\n\n") {
			t.Errorf("the SSE stream begins %.80q, want a comment naming the fields", body)
		}
		c := b.counts(filterRange + "&q=camra_id:x")
		if !slices.Equal(c.UnknownFields, []string{"camra_id"}) {
			t.Errorf("getCounts unknown_fields = %q", c.UnknownFields)
		}
	})
	t.Run("a cursor of one filter does not resume another", func(t *testing.T) {
		query := filterRange + "&q=camera_id:cam-07"
		_, body := b.get("/getStream?"+query, "Accept", "text/event-stream")
		events, err := parseSSE(strings.NewReader(string(body)))
		if err != nil || len(events) < 2 {
			t.Fatalf("events %v: %v", events, err)
		}
		first := events[0].id
		res, body := b.get("/getStream?"+query+"&after="+first, "Accept", "text/event-stream")
		if got := ids(documents(t, res.Header.Get("Content-Type"), body)); res.StatusCode != http.StatusOK || !slices.Equal(got, []string{"car"}) {
			t.Errorf("resumed with the same q: %d %v, want [car]", res.StatusCode, got)
		}
		for _, other := range []string{"", "&q=camera_id:cam-01", "&q=camera_id:cam-07%20or%20camera_id:cam-07"} {
			res, body = b.get("/getStream?"+filterRange+other+"&after="+first, "Accept", "text/event-stream")
			var e errorBody
			if json.Unmarshal(body, &e); res.StatusCode != http.StatusBadRequest || e.Error.Code != "invalid_cursor" {
				t.Errorf("resumed with %q: %d %s, want 400 invalid_cursor", other, res.StatusCode, body)
			}
		}
	})
	t.Run("counts split by a field, and by a field of nested objects", func(t *testing.T) {
		c := b.counts(filterRange + "&interval=5m&by=camera_id&top=2")
		if c.Total != 5 || len(c.Buckets) != 1 || c.By == nil || c.By.Other != 2 || *c.Buckets[0].Other != 2 ||
			!slices.Equal(c.By.Values, []valueAnswer{{"cam-07", 2}, {"cam-01", 1}}) && !slices.Equal(c.By.Values, []valueAnswer{{"cam-07", 2}, {"cam-02", 1}}) {
			t.Errorf("by camera_id: %+v", c)
		}
		c = b.counts(filterRange + "&interval=5m&by=labels.label")
		want := []valueAnswer{{"car", 2}, {"person", 2}, {"bicycle", 1}}
		if c.By == nil || !slices.Equal(c.By.Values, want) || c.Buckets[0].By["person"] != 2 {
			t.Errorf("by labels.label: %+v, want frames per label %v", c.By, want)
		}
	})
}

// counts asks /getCounts and decodes its answer.
func (b *backend) counts(query string) countsAnswer {
	b.t.Helper()
	res, body := b.get("/getCounts?" + query)
	if res.StatusCode != http.StatusOK {
		b.t.Fatalf("getCounts?%s: %d %s", query, res.StatusCode, body)
	}
	var c countsAnswer
	if err := json.Unmarshal(body, &c); err != nil {
		b.t.Fatalf("getCounts answer %s: %v", body, err)
	}
	return c
}

// Hostile and malformed filters are each a 400 naming where q is at fault, and
// none of them reaches Elasticsearch as a query it fails on.
func TestEveryBadFilterIsRefusedWithItsPosition(t *testing.T) {
	t.Parallel()
	b := filterBackend(t)
	tests := []struct {
		q   string
		pos int
	}{
		{`camera_id:`, 11},
		{`cam-07`, 1},
		{`camera_id:cam-07 and`, 21},
		{`(camera_id:cam-07`, 18},
		{`camera_id:cam-07)`, 17},
		{`camera_id:*07`, 11},                 // a leading wildcard
		{`camera_id:c*7`, 12},                 // an inner one
		{`camera_id:/cam-0[1-7]/`, 11},        // a regular expression
		{`camera_id:"cam-07`, 11},             // a quote never closed
		{`frame => 5`, 7},                     // an unknown operator
		{`frame ~ 5`, 7},                      // another
		{`frame >= ten`, 10},                  // a word for a number
		{`frame:1*`, 7},                       // a wildcard on a number
		{`@timestamp < yesterday`, 14},        // not a date
		{`labels:person`, 1},                  // a value for objects
		{`camera_id:{ x:1 }`, 1},              // braces on a keyword
		{`labels:{ confidence >= high }`, 24}, // a word for a number, in braces
		{`came$ra_id:x`, 5},                   // a character no field name has
		{`a..b:x`, 1},                         // an empty part of a name
		{`camera_id:x or or y:1`, 16},         // a keyword where a field belongs
		{`labels:{ label:person`, 22},         // a brace never closed
		{`_source:x) or (x:1`, 10},            // an injection attempt: q is never spliced into JSON
		{strings.Repeat("(", 21) + "x:1" + strings.Repeat(")", 21), 21},
		{strings.Repeat("x:1 or ", 200) + "x:1", 1403},
		{strings.Repeat("x", 2001), 2001},
	}
	for _, tt := range tests {
		for _, path := range []string{"/getJsonStream", "/getStream", "/getCounts"} {
			res, body := b.get(path + "?" + filterRange + "&q=" + url.QueryEscape(tt.q))
			var e errorBody
			if err := json.Unmarshal(body, &e); err != nil || res.StatusCode != http.StatusBadRequest ||
				e.Error.Code != "invalid_query" || e.Error.Param != "q" || e.Error.Position != tt.pos ||
				!strings.Contains(e.Error.Message, fmt.Sprintf("at character %d", tt.pos)) {
				t.Errorf("%s q=%.40q: %d %.200s, want 400 invalid_query at character %d", path, tt.q, res.StatusCode, body, tt.pos)
			}
		}
	}
	for _, op := range []string{"open_pit", "search", "close_pit", "field_caps", "counts"} {
		for _, cause := range []string{"error", "refused"} {
			if v := metricValue(t, b.metrics, `backend_elasticsearch_request_failures_total{cause="`+cause+`",operation="`+op+`"}`); v != "0" {
				t.Errorf("Elasticsearch %s failures (%s) = %q, want 0: a bad q reached the cluster", op, cause, v)
			}
		}
	}
}

// The counts of any range, interval and filter are the documents getJsonStream
// returns for it, bucket by bucket: over several days and daily indices, with
// documents indexed in no order of time (late events).
func TestCountsEqualTheDocumentsOfAnyRange(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	rng := rand.New(rand.NewPCG(21, 21))
	start := time.Date(2023, 3, 8, 0, 0, 0, 0, time.UTC)
	const days, n = 3, 3000
	frames := make([]frame, n)
	cameras := []string{"cam-01", "cam-02", "cam-03", "cam-04", "cam-05"}
	classes := []string{"person", "car", "bicycle"}
	for i := range frames {
		at := start.Add(time.Duration(rng.Int64N(int64(days*24*time.Hour/time.Millisecond))) * time.Millisecond)
		f := frame{id: fmt.Sprint("f", i), at: at.Format(time.RFC3339Nano), camera: cameras[rng.IntN(len(cameras))], number: rng.IntN(500)}
		if rng.IntN(4) > 0 {
			f.site = "gate-2"
		}
		for range rng.IntN(3) {
			f.labels = append(f.labels, label{classes[rng.IntN(len(classes))], float64(rng.IntN(100)) / 100})
		}
		frames[i] = f
	}
	indexFrames(t, esURL, prefix, frames)
	b := startBackend(t, esURL, prefix, Config{})

	filters := []string{"", "camera_id:cam-03", "frame >= 250", "not site:*", "labels:{ label:person and confidence >= 0.5 }",
		"camera_id:(cam-01 or cam-05) and labels:*"}
	intervals := []string{"auto", "1s", "30s", "1m", "7m", "1h", "3h", "1d"}
	checked := 0
	for i := range 60 {
		from := start.Add(-time.Hour + time.Duration(rng.Int64N(int64((days*24+2)*time.Hour/time.Millisecond)))*time.Millisecond)
		to := from.Add(time.Duration(rng.Int64N(int64(40*time.Hour/time.Millisecond))) * time.Millisecond)
		q, interval := filters[rng.IntN(len(filters))], intervals[rng.IntN(len(intervals))]
		query := "start_date=" + from.Format(time.RFC3339Nano) + "&end_date=" + to.Format(time.RFC3339Nano) + "&q=" + url.QueryEscape(q)
		res, body := b.get("/getJsonStream?" + query)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("getJsonStream?%s: %d %s", query, res.StatusCode, body)
		}
		docs := documents(t, "application/json", body)
		res, body = b.get("/getCounts?" + query + "&interval=" + interval + "&buckets=2000")
		if res.StatusCode == http.StatusBadRequest && strings.Contains(string(body), "too_many_buckets") {
			continue // a short interval over a long range: refused, as it should be
		}
		checked++
		var c countsAnswer
		if err := json.Unmarshal(body, &c); err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("getCounts?%s: %d %s", query, res.StatusCode, body)
		}
		iv, ok := parseInterval(c.Interval)
		if !ok && c.Interval != "" {
			iv = 24 * time.Hour * time.Duration(mustAtoi(t, strings.TrimSuffix(c.Interval, "d")))
		}
		want := map[string]int64{}
		for _, d := range docs {
			at := parseTime(t, d.Timestamp)
			start := time.UnixMilli(floorDiv(at.UnixMilli(), iv.Milliseconds()) * iv.Milliseconds())
			if start.Before(from) { // the first bucket starts with the range
				start = from
			}
			want[start.UTC().Format(time.RFC3339Nano)]++
		}
		var sum int64
		for _, bk := range c.Buckets {
			sum += bk.Count
			if bk.Count != want[bk.Start] {
				t.Errorf("case %d (%s, q=%q, interval %s): bucket %s counts %d, getJsonStream has %d", i, query, q, c.Interval, bk.Start, bk.Count, want[bk.Start])
			}
		}
		if c.Total != int64(len(docs)) || sum != c.Total || len(c.Buckets) != bucketCount(from, to, iv) {
			t.Errorf("case %d (%s, interval %s): total %d, buckets sum %d, %d buckets; getJsonStream has %d documents, want %d buckets",
				i, query, c.Interval, c.Total, sum, len(c.Buckets), len(docs), bucketCount(from, to, iv))
		}
	}
	if checked < 30 {
		t.Errorf("only %d of 60 random cases were answered; the rest had too many buckets", checked)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return n
}

// A q of many long field names asks for their types in one request, however
// long their list.
func TestAFilterOfManyLongFieldNamesIsAnswered(t *testing.T) {
	t.Parallel()
	b := filterBackend(t)
	var conds []string
	for i := range 100 {
		conds = append(conds, fmt.Sprintf("f%03d_%s:x", i, strings.Repeat("y", 25)))
	}
	q := strings.Join(conds, " or ") + " or camera_id:cam-07"
	if len(q) > 2000 {
		q = q[len(q)-1990:]
		q = q[strings.Index(q, " or ")+4:]
	}
	res, body := b.get("/getJsonStream?" + filterRange + "&q=" + url.QueryEscape(q))
	if got := ids(documents(t, res.Header.Get("Content-Type"), body)); res.StatusCode != http.StatusOK || !slices.Equal(got, []string{"no-labels", "car"}) {
		t.Errorf("%d %v, want the frames of cam-07", res.StatusCode, got)
	}
}

// A deployment that has stored nothing yet still gets its chart: every bucket,
// each empty.
func TestCountsBeforeAnyIndexHaveEveryBucketEmpty(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	b := startBackend(t, esURL, testenv.IndexPrefix(t, esURL), Config{})
	c := b.counts(filterRange + "&interval=1m&by=camera_id")
	if c.Total != 0 || len(c.Buckets) != 5 || c.Buckets[4].Start != "2023-03-09T19:44:00Z" || c.Buckets[4].Count != 0 {
		t.Errorf("counts with no index: %+v, want 5 empty buckets", c)
	}
}
