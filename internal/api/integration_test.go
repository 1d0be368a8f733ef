//go:build integration

package api

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

// These tests run the API against the real Elasticsearch node, each in an index
// prefix of its own, and check every response against /openapi.json.

// backend is the API in front of a real store.
type backend struct {
	t       *testing.T
	url     string
	spec    *specValidator
	esURL   string
	metrics *Metrics
}

func startBackend(t *testing.T, esURL, prefix string, cfg Config) *backend {
	t.Helper()
	return startBackendOn(t, esURL, prefix, cfg, nil)
}

// startBackendOn is startBackend whose listener is wrap's, when not nil.
func startBackendOn(t *testing.T, esURL, prefix string, cfg Config, wrap func(net.Listener) net.Listener) *backend {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	st, err := store.New(store.Config{Addresses: []string{esURL}, IndexPrefix: prefix, Observe: m.ObserveQuery})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewServer(slog.New(slog.DiscardHandler), cfg, st, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	if wrap != nil {
		srv.Listener = wrap(srv.Listener)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return &backend{t: t, url: srv.URL, spec: newSpecValidator(t), esURL: esURL, metrics: m}
}

// in is the same backend, reporting to t: a subtest's own, so that the
// subtests of one backend may run in parallel.
func (b *backend) in(t *testing.T) *backend {
	c := *b
	c.t = t
	return &c
}

// get sends a GET with the given headers, reads the whole body and checks the
// exchange against the description.
func (b *backend) get(path string, header ...string) (*http.Response, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.url+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		b.t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	if res.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			b.t.Fatal(err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			b.t.Fatalf("GET %s: gunzip: %v", path, err)
		}
	}
	b.spec.check(b.t, req, res, body)
	return res, body
}

// doc is what the tests read back of a stored document.
type doc struct {
	ID        string `json:"id"`
	Timestamp string `json:"@timestamp"`
}

// documents decodes a response body of any of the three encodings.
func documents(t *testing.T, contentType string, body []byte) []doc {
	t.Helper()
	var docs []doc
	switch contentType {
	case "application/json":
		if err := json.Unmarshal(body, &docs); err != nil {
			t.Fatalf("JSON body: %v", err)
		}
	case "application/x-ndjson":
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			var d doc
			if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
				t.Fatalf("NDJSON line %q: %v", sc.Text(), err)
			}
			docs = append(docs, d)
		}
	case "text/event-stream":
		events, err := parseSSE(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(events); n == 0 || events[n-1].event != "end" || events[n-1].data != fmt.Sprintf(`{"documents":%d}`, n-1) {
			t.Fatalf("the SSE stream does not close with an end event counting its %d documents", n-1)
		}
		for _, e := range events[:len(events)-1] {
			var d doc
			if err := json.Unmarshal([]byte(e.data), &d); err != nil || e.event != "message" {
				t.Fatalf("SSE event %+v: %v", e, err)
			}
			docs = append(docs, d)
		}
	default:
		t.Fatalf("unexpected Content-Type %q", contentType)
	}
	return docs
}

func ids(docs []doc) []string {
	out := make([]string, len(docs))
	for i, d := range docs {
		out[i] = d.ID
	}
	return out
}

// indexed stores documents with the given ids and timestamps.
func indexed(t *testing.T, esURL, prefix string, docs []doc) {
	t.Helper()
	testenv.IndexDocuments(t, esURL, prefix, len(docs), func(i int) pipeline.Item {
		ts, err := time.Parse(time.RFC3339Nano, docs[i].Timestamp)
		if err != nil {
			t.Fatal(err)
		}
		return pipeline.Item{ID: docs[i].ID, Timestamp: ts, Body: testenv.DocumentBody(docs[i].ID, ts, "cam-1")}
	})
}

func TestRangesAreStartInclusiveEndExclusiveInEveryForm(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	indexed(t, esURL, prefix, []doc{
		{"prev-day", "2023-03-08T19:41:00Z"},
		{"midnight", "2023-03-09T00:00:00Z"},
		{"before", "2023-03-09T19:39:59.999Z"},
		{"at-start", "2023-03-09T19:40:00Z"},
		{"tie-1", "2023-03-09T19:42:00Z"},
		{"tie-2", "2023-03-09T19:42:00Z"},
		{"tie-3", "2023-03-09T19:42:00Z"},
		{"last-ms", "2023-03-09T19:44:59.999Z"},
		{"at-end", "2023-03-09T19:45:00Z"},
		{"next-midnight", "2023-03-10T00:00:00Z"},
		{"next-day", "2023-03-10T19:41:00Z"},
	})
	b := startBackend(t, esURL, prefix, Config{})
	berlin := startBackend(t, esURL, prefix, Config{DefaultZone: berlinZone(t)})
	ties := []string{"tie-1", "tie-2", "tie-3"}
	inRange := slices.Concat([]string{"at-start"}, ties, []string{"last-ms"})

	tests := []struct {
		name  string
		b     *backend
		query string
		want  []string
	}{
		{"zone-less UTC", b, "start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00", inRange},
		{"Z", b, "start_date=2023-03-09T19:40:00Z&end_date=2023-03-09T19:45:00Z", inRange},
		{"offsets", b, "start_date=2023-03-09T20:40:00%2B01:00&end_date=2023-03-09T14:45:00-05:00", inRange},
		{"an offset whose + became a space", b, "start_date=2023-03-09T20:40:00+01:00&end_date=2023-03-09T20:45:00+01:00", inRange},
		{"zone-less in API_DEFAULT_TIMEZONE", berlin, "start_date=2023-03-09T20:40:00&end_date=2023-03-09T20:45:00", inRange},
		{"one millisecond after the start", b, "start_date=2023-03-09T19:40:00.001Z&end_date=2023-03-09T19:45:00Z", slices.Concat(ties, []string{"last-ms"})},
		{"fractional end", b, "start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:44:59.999", slices.Concat([]string{"at-start"}, ties)},
		{"date only", b, "start_date=2023-03-09&end_date=2023-03-10",
			slices.Concat([]string{"midnight", "before", "at-start"}, ties, []string{"last-ms", "at-end"})},
		{"across daily indices", b, "start_date=2023-03-08T19:41:00Z&end_date=2023-03-09T19:40:00Z", []string{"prev-day", "midnight", "before"}},
		{"the first adjacent window", b, "start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:42:00", []string{"at-start"}},
		{"the second adjacent window", b, "start_date=2023-03-09T19:42:00&end_date=2023-03-09T19:45:00", slices.Concat(ties, []string{"last-ms"})},
		{"an empty range at a shared timestamp", b, "start_date=2023-03-09T19:42:00&end_date=2023-03-09T19:42:00", nil},
		{"a range with nothing in it", b, "start_date=2024-01-01&end_date=2024-01-02", nil},
		{"newest first", b, "start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00&order=desc",
			slices.Concat([]string{"last-ms"}, ties, []string{"at-start"})},
		{"limit", b, "start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00&limit=2", []string{"at-start", "tie-?"}},
		{"limit, newest first", b, "start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00&limit=2&order=desc", []string{"last-ms", "tie-?"}},
		{"a limit above the count", b, "start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00&limit=1000", inRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{"/getJsonStream", "/getStream"} {
				res, body := tt.b.get(path + "?" + tt.query)
				if res.StatusCode != http.StatusOK {
					t.Fatalf("%s: %d %s", path, res.StatusCode, body)
				}
				got := ids(documents(t, res.Header.Get("Content-Type"), body))
				if !sameUpToTies(got, tt.want) {
					t.Errorf("%s?%s = %v, want %v", path, tt.query, got, tt.want)
				}
			}
		})
	}

	t.Run("fields returns only the named fields", func(t *testing.T) {
		res, body := b.get("/getStream?start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:42:00&fields=id,camera_id")
		if res.StatusCode != http.StatusOK || string(body) != `{"camera_id":"cam-1","id":"at-start"}`+"\n" && string(body) != `{"id":"at-start","camera_id":"cam-1"}`+"\n" {
			t.Errorf("got %d %s, want only id and camera_id", res.StatusCode, body)
		}
	})
	t.Run("documents are returned as stored", func(t *testing.T) {
		_, body := b.get("/getStream?start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:42:00")
		var got, want any
		json.Unmarshal(body, &got)
		json.Unmarshal(testenv.DocumentBody("at-start", time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC), "cam-1"), &want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("document = %s, want what was indexed", body)
		}
	})
}

// sameUpToTies compares id lists in which documents sharing a timestamp (tie-1,
// tie-2, tie-3) may come in any order; "tie-?" in want stands for any one of them.
func sameUpToTies(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	seen := map[string]bool{}
	for i := range got {
		switch {
		case strings.HasPrefix(got[i], "tie-") && (want[i] == "tie-?" || strings.HasPrefix(want[i], "tie-")):
			if seen[got[i]] {
				return false
			}
			seen[got[i]] = true
		case got[i] != want[i]:
			return false
		}
	}
	return true
}

func TestTwentyFiveThousandDocumentsComeBackCompleteInOrderWithoutDuplicates(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	// Three documents per timestamp, so that ties straddle the 1000-document pages,
	// and the range crosses midnight, so that it spans two daily indices.
	const n = 25000
	start := time.Date(2023, 3, 9, 23, 0, 0, 0, time.UTC)
	stamp := func(i int) time.Time { return start.Add(time.Duration(i/3) * 500 * time.Millisecond) }
	testenv.IndexDocuments(t, esURL, prefix, n+2, func(i int) pipeline.Item {
		switch i {
		case n: // just outside, on either side
			ts := start.Add(-time.Millisecond)
			return pipeline.Item{ID: "outside-before", Timestamp: ts, Body: testenv.DocumentBody("outside-before", ts, "cam-9")}
		case n + 1:
			ts := stamp(n - 1).Add(time.Millisecond)
			return pipeline.Item{ID: "outside-after", Timestamp: ts, Body: testenv.DocumentBody("outside-after", ts, "cam-9")}
		}
		id := fmt.Sprintf("doc-%05d", i)
		return pipeline.Item{ID: id, Timestamp: stamp(i), Body: testenv.DocumentBody(id, stamp(i), fmt.Sprintf("cam-%d", i%4))}
	})
	b := startBackend(t, esURL, prefix, Config{})
	query := "?start_date=" + start.Format(time.RFC3339) + "&end_date=" + stamp(n-1).Add(time.Millisecond).Format(time.RFC3339Nano)

	for _, tt := range []struct {
		name   string
		path   string
		header []string
		desc   bool
	}{
		{"getJsonStream", "/getJsonStream" + query, nil, false},
		{"getStream as NDJSON", "/getStream" + query, nil, false},
		{"getStream as SSE", "/getStream" + query, []string{"Accept", "text/event-stream"}, false},
		{"getJsonStream gzipped", "/getJsonStream" + query, []string{"Accept-Encoding", "gzip"}, false},
		{"getStream newest first", "/getStream" + query + "&order=desc", nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Each form reads the index on its own; the streams overlap, as they
			// would for as many clients.
			t.Parallel()
			res, body := b.in(t).get(tt.path, tt.header...)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("%d %s", res.StatusCode, body)
			}
			docs := documents(t, res.Header.Get("Content-Type"), body)
			if len(docs) != n {
				t.Errorf("%d documents, want %d", len(docs), n)
			}
			seen := make(map[string]bool, n)
			for i, d := range docs {
				if seen[d.ID] {
					t.Fatalf("document %s came twice", d.ID)
				}
				seen[d.ID] = true
				if i > 0 {
					prev, cur := parseTime(t, docs[i-1].Timestamp), parseTime(t, d.Timestamp)
					if !tt.desc && cur.Before(prev) || tt.desc && cur.After(prev) {
						t.Fatalf("document %d (%s at %s) is out of order after %s at %s", i, d.ID, d.Timestamp, docs[i-1].ID, docs[i-1].Timestamp)
					}
				}
			}
			for i := range n {
				if id := fmt.Sprintf("doc-%05d", i); !seen[id] {
					t.Fatalf("document %s is missing", id)
				}
			}
		})
	}
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func TestEveryBadRequestNamesItsProblem(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	b := startBackend(t, esURL, testenv.IndexPrefix(t, esURL), Config{MaxRange: 168 * time.Hour})
	const ok = "start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00"
	tests := []struct {
		path        string
		status      int
		code, param string
	}{
		{"/getJsonStream?end_date=2023-03-09", 400, "missing_parameter", "start_date"},
		{"/getStream?start_date=2023-03-09", 400, "missing_parameter", "end_date"},
		{"/getJsonStream?start_date=yesterday&end_date=2023-03-09", 400, "invalid_parameter", "start_date"},
		{"/getJsonStream?start_date=2023-03-09&end_date=2023-03-09T25:00:00", 400, "invalid_parameter", "end_date"},
		{"/getJsonStream?start_date=2023-03-09T19:40:00%2B0100&end_date=2023-03-10", 400, "invalid_parameter", "start_date"},
		{"/getStream?start_date=2023-03-10&end_date=2023-03-09", 400, "invalid_range", "start_date"},
		{"/getStream?start_date=2023-03-01&end_date=2023-03-09", 400, "range_too_long", "end_date"},
		{"/getJsonStream?" + ok + "&limit=0", 400, "invalid_parameter", "limit"},
		{"/getJsonStream?" + ok + "&limit=many", 400, "invalid_parameter", "limit"},
		{"/getStream?" + ok + "&order=newest", 400, "invalid_parameter", "order"},
		{"/getStream?" + ok + "&fields=a%20b", 400, "invalid_parameter", "fields"},
		{"/getStream?" + ok + "&start=2023-03-09", 400, "unknown_parameter", "start"},
		{"/getStream?" + ok + "&" + ok, 400, "invalid_parameter", "end_date"},
		{"/getjsonstream?" + ok, 404, "not_found", ""},
		{"/index.html", 404, "not_found", ""}, // the page is at / alone
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			res, body := b.get(tt.path)
			var e errorBody
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%d body %q is not JSON", res.StatusCode, body)
			}
			if res.StatusCode != tt.status || e.Error.Code != tt.code || e.Error.Param != tt.param || e.Error.Message == "" {
				t.Errorf("got %d %+v, want %d %s for %q", res.StatusCode, e.Error, tt.status, tt.code, tt.param)
			}
		})
	}
}

func TestElasticsearchOutOfReachIsA503UntilItIsBack(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	indexed(t, esURL, prefix, []doc{{"a", "2023-03-09T19:41:00Z"}})
	proxy := testenv.NewProxy(t, strings.TrimPrefix(esURL, "http://"))
	b := startBackend(t, "http://"+proxy.Addr(), prefix, Config{})
	query := "?start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00"

	proxy.Cut()
	for _, path := range []string{"/getJsonStream" + query, "/getStream" + query, "/readyz"} {
		res, body := b.get(path)
		var e errorBody
		json.Unmarshal(body, &e)
		if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") != "5" || e.Error.Code != "elasticsearch_unavailable" {
			t.Errorf("%s with Elasticsearch cut off: %d Retry-After=%q %s, want 503 elasticsearch_unavailable with Retry-After 5",
				path, res.StatusCode, res.Header.Get("Retry-After"), body)
		}
	}
	if res, _ := b.get("/healthz"); res.StatusCode != http.StatusOK {
		t.Errorf("/healthz with Elasticsearch cut off: %d, want 200 (the process is alive)", res.StatusCode)
	}

	proxy.Restore()
	res, body := b.get("/getJsonStream" + query)
	if res.StatusCode != http.StatusOK || len(documents(t, "application/json", body)) != 1 {
		t.Errorf("after Elasticsearch is back: %d %s, want the document", res.StatusCode, body)
	}
	if res, _ := b.get("/readyz"); res.StatusCode != http.StatusOK {
		t.Errorf("/readyz after Elasticsearch is back: %d, want 200", res.StatusCode)
	}
}

// TestAClientThatGoesAwayReleasesItsPointInTime checks that a stream abandoned
// halfway leaves no point in time open in Elasticsearch.
func TestAClientThatGoesAwayReleasesItsPointInTime(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	start := time.Date(2023, 3, 9, 10, 0, 0, 0, time.UTC)
	testenv.IndexDocuments(t, esURL, prefix, 20000, func(i int) pipeline.Item {
		ts := start.Add(time.Duration(i) * time.Second)
		return pipeline.Item{ID: fmt.Sprint(i), Timestamp: ts, Body: testenv.DocumentBody(fmt.Sprint(i), ts, "cam-1")}
	})
	b := startBackend(t, esURL, prefix, Config{PageSize: 100})
	m := b.metrics

	res := get(t, b.url+"/getStream?start_date=2023-03-09&end_date=2023-03-10")
	if line, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil || !strings.Contains(line, `"id":"0"`) {
		t.Fatalf("first line %q, %v", line, err)
	}
	res.Body.Close() // the client leaves with most of the range unread

	// The handler notices on its next write, and closes the point in time it opened.
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec := httptest.NewRecorder()
		m.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if strings.Contains(rec.Body.String(), `backend_elasticsearch_request_duration_seconds_count{operation="close_pit"} 1`) &&
			strings.Contains(rec.Body.String(), "backend_streams_in_flight 0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the abandoned stream did not close its point in time within 20s:\n%s", rec.Body.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var docs float64
	fmt.Sscan(metricValue(t, m, `backend_documents_streamed_total{route="/getStream"}`), &docs)
	if docs >= 20000 {
		t.Errorf("%v documents were streamed to a client that left after the first", docs)
	}
}

func metricValue(t *testing.T, m *Metrics, series string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

func berlinZone(t *testing.T) *time.Location {
	t.Helper()
	zone, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return zone
}

func TestSlicedStreamsSendTheSameBytesAsOneStream(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	// Three documents per timestamp across midnight (two daily indices), with
	// sequences shuffled against the ids, as in the store's own tests, so that
	// ties and cursors are both at stake.
	const n = 6000
	start := time.Date(2023, 3, 9, 23, 50, 0, 0, time.UTC)
	testenv.IndexDocuments(t, esURL, prefix, n, func(i int) pipeline.Item {
		ts := start.Add(time.Duration(i/3) * 500 * time.Millisecond)
		id := fmt.Sprintf("doc-%05d", i)
		return pipeline.Item{ID: id, Timestamp: ts, Body: fmt.Appendf(nil, `{"@timestamp":%q,"id":%q,"@nats":{"seq":%d}}`, ts.Format(time.RFC3339Nano), id, 7*i%n+1)}
	})
	key := []byte("the same cursor key for both, 32")
	one := startBackend(t, esURL, prefix, Config{CursorKey: key})
	sliced := startBackend(t, esURL, prefix, Config{CursorKey: key, ExportSlices: 2})
	query := "?start_date=2023-03-09T23:50:00Z&end_date=2023-03-10T00:30:00Z"
	for _, tt := range []struct {
		name   string
		path   string
		header []string
	}{
		{"getJsonStream", "/getJsonStream" + query, nil},
		{"getJsonStream newest first, limited", "/getJsonStream" + query + "&order=desc&limit=2500", nil},
		{"getStream as SSE", "/getStream" + query, []string{"Accept", "text/event-stream"}},
	} {
		res, want := one.get(tt.path, tt.header...)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", tt.name, res.StatusCode, want)
		}
		if _, got := sliced.get(tt.path, tt.header...); !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes in 2 slices differ from the %d of one stream", tt.name, len(got), len(want))
		}
	}
}
