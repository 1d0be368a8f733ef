package api

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/admin"
	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

// These tests put a scripted Exporter behind the real handler stack, to make
// failures happen exactly where a test wants them. What crosses into Elasticsearch
// is tested against a real node in integration_test.go.

// noMapping is a store whose indices map no field and hold no document.
type noMapping struct{}

func (noMapping) FieldCaps(context.Context, []string) (map[string]map[string][]string, error) {
	return map[string]map[string][]string{}, nil
}

func (noMapping) Counts(context.Context, pipeline.CountsRequest) (pipeline.Counts, error) {
	return pipeline.Counts{}, nil
}

// fakeExporter serves pages, then fails with err (if set). When gate is set, it waits
// for a value on it before each page after the first.
type fakeExporter struct {
	noMapping
	pages    []pipeline.Page
	err      error
	checkErr error
	gate     chan struct{}

	mu     sync.Mutex
	ranges []pipeline.Range
}

func (f *fakeExporter) Export(ctx context.Context, r pipeline.Range, fn func(pipeline.Page) error) error {
	f.mu.Lock()
	f.ranges = append(f.ranges, r)
	f.mu.Unlock()
	var seq uint64
	for i, p := range f.pages {
		if r.Keys && p.Keys == nil {
			// As the store orders documents that carry cursors: by key.
			for range p.Docs {
				seq++
				p.Keys = append(p.Keys, pipeline.Key{Time: int64(seq), Seq: seq})
			}
		}
		if i > 0 && f.gate != nil {
			select {
			case <-f.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := fn(p); err != nil {
			return err
		}
	}
	return f.err
}

func (f *fakeExporter) Check(context.Context) error { return f.checkErr }

func page(docs ...string) pipeline.Page {
	p := pipeline.Page{Docs: make([][]byte, len(docs))}
	for i, d := range docs {
		p.Docs[i] = []byte(d)
	}
	return p
}

// serve starts the API with st and cfg (defaults for what it leaves zero); the
// returned buffer collects its log.
func serve(t *testing.T, st Exporter, cfg Config) (*httptest.Server, *testenv.Buffer) {
	t.Helper()
	logs := &testenv.Buffer{}
	h, err := NewServer(slog.New(slog.NewJSONHandler(logs, nil)), cfg, st, nil, NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, logs
}

const someRange = "?start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00"

func get(t *testing.T, url string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	// No transparent gzip: tests that want it ask for it and check it.
	res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func readAll(t *testing.T, res *http.Response) (string, error) {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

func errorOf(t *testing.T, body string) apiError {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("body %q is not an error: %v", body, err)
	}
	return e.Error
}

var errStoreDown = errors.New("elasticsearch: connection refused")

func TestAStreamThatFailsMidwayIsVisiblyIncomplete(t *testing.T) {
	st := &fakeExporter{pages: []pipeline.Page{page(`{"id":"a"}`, `{"id":"b"}`)}, err: errStoreDown}
	srv, _ := serve(t, st, Config{})

	t.Run("a JSON array is left unclosed", func(t *testing.T) {
		res := get(t, srv.URL+"/getJsonStream"+someRange)
		body, err := readAll(t, res)
		if res.StatusCode != http.StatusOK || body != `[{"id":"a"},{"id":"b"}` {
			t.Errorf("got %d %q, want 200 and the documents without the closing bracket", res.StatusCode, body)
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("reading the body: %v, want io.ErrUnexpectedEOF (the chunked body is cut short)", err)
		}
		var v any
		if json.Unmarshal([]byte(body), &v) == nil {
			t.Errorf("the truncated body parses as JSON")
		}
	})
	t.Run("NDJSON ends with an error record", func(t *testing.T) {
		res := get(t, srv.URL+"/getStream"+someRange)
		body, err := readAll(t, res)
		lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
		if len(lines) != 3 || lines[0] != `{"id":"a"}` || lines[1] != `{"id":"b"}` {
			t.Fatalf("body = %q, want two documents and an error record", body)
		}
		if e := errorOf(t, lines[2]); e.Code != "stream_interrupted" || !strings.Contains(e.Message, "after 2 documents") {
			t.Errorf("last record = %+v, want stream_interrupted after 2 documents", e)
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("reading the body: %v, want io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("SSE ends with an error event", func(t *testing.T) {
		res := get(t, srv.URL+"/getStream"+someRange, "Accept", "text/event-stream")
		body, err := readAll(t, res)
		body = withoutEventIDs(t, body, 2)
		want := "data: {\"id\":\"a\"}\n\ndata: {\"id\":\"b\"}\n\nevent: error\ndata: "
		if !strings.HasPrefix(body, want) || !strings.HasSuffix(body, "\n\n") || strings.Contains(body, "event: end") {
			t.Fatalf("body = %q, want two events and an error event", body)
		}
		if e := errorOf(t, strings.TrimSpace(strings.TrimPrefix(body, want))); e.Code != "stream_interrupted" {
			t.Errorf("error event = %+v, want stream_interrupted", e)
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("reading the body: %v, want io.ErrUnexpectedEOF", err)
		}
	})
}

func TestACompleteStreamEndsWellFormed(t *testing.T) {
	st := &fakeExporter{pages: []pipeline.Page{page(`{"id":"a"}`), page(`{"id":"b"}`, `{"id":"c"}`)}}
	srv, _ := serve(t, st, Config{})
	for _, tt := range []struct {
		name, path, accept, contentType, body string
		ids                                   int // SSE events with a cursor
	}{
		{"JSON array", "/getJsonStream", "", "application/json", `[{"id":"a"},{"id":"b"},{"id":"c"}]` + "\n", 0},
		{"NDJSON", "/getStream", "", "application/x-ndjson", "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}\n", 0},
		{"NDJSON for a browser's Accept", "/getStream", "text/html,application/xhtml+xml,*/*;q=0.8", "application/x-ndjson", "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}\n", 0},
		{"SSE", "/getStream", "text/event-stream", "text/event-stream",
			"data: {\"id\":\"a\"}\n\ndata: {\"id\":\"b\"}\n\ndata: {\"id\":\"c\"}\n\nevent: end\ndata: {\"documents\":3}\n\n", 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := get(t, srv.URL+tt.path+someRange, "Accept", tt.accept)
			body, err := readAll(t, res)
			body = withoutEventIDs(t, body, tt.ids)
			if err != nil || res.StatusCode != http.StatusOK || body != tt.body {
				t.Errorf("got %d %q (%v), want 200 %q", res.StatusCode, body, err, tt.body)
			}
			if ct := res.Header.Get("Content-Type"); ct != tt.contentType {
				t.Errorf("Content-Type = %q, want %q", ct, tt.contentType)
			}
		})
	}
	t.Run("an empty range", func(t *testing.T) {
		srv, _ := serve(t, &fakeExporter{}, Config{})
		for path, want := range map[string]string{"/getJsonStream": "[]\n", "/getStream": ""} {
			res := get(t, srv.URL+path+someRange)
			if body, err := readAll(t, res); err != nil || res.StatusCode != http.StatusOK || body != want {
				t.Errorf("%s: got %d %q (%v), want 200 %q", path, res.StatusCode, body, err, want)
			}
		}
	})
}

func TestAPrettyPrintedDocumentStaysOnOneLine(t *testing.T) {
	pretty := "{\n  \"id\": \"a\",\n  \"note\": \"two\\nlines\"\r\n}"
	srv, _ := serve(t, &fakeExporter{pages: []pipeline.Page{page(pretty)}}, Config{})
	res := get(t, srv.URL+"/getStream"+someRange)
	if body, _ := readAll(t, res); body != "{\"id\":\"a\",\"note\":\"two\\nlines\"}\n" {
		t.Errorf("NDJSON body = %q, want the document compacted onto one line", body)
	}
	res = get(t, srv.URL+"/getJsonStream"+someRange)
	if body, _ := readAll(t, res); body != "["+pretty+"]\n" {
		t.Errorf("JSON body = %q, want the document as stored", body)
	}
}

func TestStoreFailureBeforeTheFirstDocumentIsA503WithRetryAfter(t *testing.T) {
	srv, _ := serve(t, &fakeExporter{err: errStoreDown}, Config{})
	res := get(t, srv.URL+"/getJsonStream"+someRange)
	body, _ := readAll(t, res)
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") != "5" {
		t.Errorf("got %d with Retry-After %q, want 503 with Retry-After 5", res.StatusCode, res.Header.Get("Retry-After"))
	}
	if e := errorOf(t, body); e.Code != "elasticsearch_unavailable" {
		t.Errorf("error = %+v, want elasticsearch_unavailable", e)
	}

	t.Run("a query Elasticsearch rejects is a 502", func(t *testing.T) {
		srv, _ := serve(t, &fakeExporter{err: permanentError{"search_phase_execution_exception"}}, Config{})
		res := get(t, srv.URL+"/getJsonStream"+someRange)
		body, _ := readAll(t, res)
		if res.StatusCode != http.StatusBadGateway || errorOf(t, body).Code != "elasticsearch_error" {
			t.Errorf("got %d %s, want 502 elasticsearch_error", res.StatusCode, body)
		}
	})
}

func TestGzipResponsesStillArrivePageByPage(t *testing.T) {
	// The second page is held back until the client has seen the first: only a
	// flush that reaches through the compressor lets the test go on.
	gate := make(chan struct{})
	st := &fakeExporter{pages: []pipeline.Page{page(`{"id":"a"}`), page(`{"id":"b"}`)}, gate: gate}
	srv, _ := serve(t, st, Config{})
	res := get(t, srv.URL+"/getStream"+someRange, "Accept-Encoding", "gzip")
	if ce := res.Header.Get("Content-Encoding"); ce != "gzip" {
		t.Fatalf("Content-Encoding = %q, want gzip", ce)
	}
	zr, err := gzip.NewReader(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewReader(zr)
	first := make(chan string)
	go func() {
		line, _ := lines.ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		if line != "{\"id\":\"a\"}\n" {
			t.Fatalf("first line = %q", line)
		}
	case <-time.After(10 * time.Second):
		close(gate)
		t.Fatal("the first page did not arrive before the second was released: gzip held it back")
	}
	close(gate)
	rest, err := io.ReadAll(lines)
	if err != nil || string(rest) != "{\"id\":\"b\"}\n" {
		t.Errorf("rest = %q, %v", rest, err)
	}
}

func TestAPIKeysGuardTheDataAndMetricsButNotTheProbes(t *testing.T) {
	const key, other = "k-0123456789abcdef", "k2-0123456789abcdef"
	st := &fakeExporter{pages: []pipeline.Page{page(`{"id":"a"}`)}}
	srv, logs := serve(t, st, Config{APIKeys: []string{key, other}})
	tests := []struct {
		name   string
		path   string
		header []string
		want   int
	}{
		{"no key", "/getJsonStream" + someRange, nil, http.StatusUnauthorized},
		{"a wrong key", "/getJsonStream" + someRange, []string{"X-API-Key", key + "x"}, http.StatusUnauthorized},
		{"a prefix of a key", "/getJsonStream" + someRange, []string{"Authorization", "Bearer " + key[:10]}, http.StatusUnauthorized},
		{"a key in the wrong scheme", "/getJsonStream" + someRange, []string{"Authorization", "Basic " + key}, http.StatusUnauthorized},
		{"Bearer", "/getJsonStream" + someRange, []string{"Authorization", "Bearer " + key}, http.StatusOK},
		{"bearer in lower case", "/getStream" + someRange, []string{"Authorization", "bearer " + other}, http.StatusOK},
		{"X-API-Key", "/getStream" + someRange, []string{"X-API-Key", other}, http.StatusOK},
		{"counts without a key", "/getCounts" + someRange, nil, http.StatusUnauthorized},
		{"counts with a key", "/getCounts" + someRange, []string{"Authorization", "Bearer " + key}, http.StatusOK},
		{"metrics without a key", "/metrics", nil, http.StatusUnauthorized},
		{"metrics with a key", "/metrics", []string{"X-API-Key", key}, http.StatusOK},
		{"healthz needs none", "/healthz", nil, http.StatusOK},
		{"readyz needs none", "/readyz", nil, http.StatusOK},
		{"openapi.json needs none", "/openapi.json", nil, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := get(t, srv.URL+tt.path, tt.header...)
			body, _ := readAll(t, res)
			if res.StatusCode != tt.want {
				t.Fatalf("got %d %s, want %d", res.StatusCode, body, tt.want)
			}
			if tt.want == http.StatusUnauthorized {
				if e := errorOf(t, body); e.Code != "unauthorized" {
					t.Errorf("error = %+v, want unauthorized", e)
				}
				if res.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
			}
		})
	}
	if strings.Contains(logs.String(), key[2:]) || strings.Contains(logs.String(), other[3:]) {
		t.Errorf("the log contains an API key:\n%s", logs.String())
	}
}

func TestEachClientIsRateLimitedWithA429(t *testing.T) {
	st := &fakeExporter{}
	srv, _ := serve(t, st, Config{RateLimit: 3, RateWindow: time.Hour})
	for i := range 3 {
		if res := get(t, srv.URL+"/getJsonStream"+someRange); res.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d, want 200", i+1, res.StatusCode)
		}
	}
	res := get(t, srv.URL+"/getJsonStream"+someRange)
	body, _ := readAll(t, res)
	if res.StatusCode != http.StatusTooManyRequests || errorOf(t, body).Code != "rate_limited" {
		t.Fatalf("4th request: %d %s, want 429 rate_limited", res.StatusCode, body)
	}
	// Windows are aligned to the clock. Three requests in this hour still weigh
	// 3*(1-e/1h) in the next one, which admits a fourth once that is below 2: a
	// third of an hour into the next window.
	intoHour := time.Duration(time.Now().UnixNano()) % time.Hour
	want := (time.Hour - intoHour + 20*time.Minute).Seconds()
	if ra, err := strconv.Atoi(res.Header.Get("Retry-After")); err != nil || math.Abs(float64(ra)-want) > 2 {
		t.Errorf("Retry-After = %q, want the seconds until the next request is admitted, %.0f", res.Header.Get("Retry-After"), want)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	// Probes are not counted: a load balancer must always reach them.
	if res := get(t, srv.URL+"/healthz"); res.StatusCode != http.StatusOK {
		t.Errorf("/healthz after the limit: %d, want 200", res.StatusCode)
	}

	t.Run("behind a trusted proxy, each forwarded client has its own budget", func(t *testing.T) {
		srv, _ := serve(t, st, Config{RateLimit: 1, RateWindow: time.Hour, TrustedProxies: []string{"127.0.0.0/8"}})
		for _, tt := range []struct {
			client string
			want   int
		}{{"192.0.2.1", 200}, {"192.0.2.2", 200}, {"192.0.2.1", 429}} {
			if res := get(t, srv.URL+"/getJsonStream"+someRange, "X-Forwarded-For", tt.client); res.StatusCode != tt.want {
				t.Errorf("request for %s: %d, want %d", tt.client, res.StatusCode, tt.want)
			}
		}
	})
}

func TestRetryAfterIsWhenTheNextRequestIsAdmitted(t *testing.T) {
	t.Parallel()
	srv, _ := serve(t, &fakeExporter{}, Config{RateLimit: 2, RateWindow: 2 * time.Second})
	var res *http.Response
	for res = get(t, srv.URL+"/healthz"); ; res = get(t, srv.URL+"/openapi.json") {
		if res.StatusCode == http.StatusTooManyRequests {
			break
		}
	}
	wait, err := strconv.Atoi(res.Header.Get("Retry-After"))
	if err != nil || wait < 1 || wait > 4 {
		t.Fatalf("Retry-After = %q, want 1 to 4 seconds", res.Header.Get("Retry-After"))
	}
	time.Sleep(time.Duration(wait) * time.Second)
	if res := get(t, srv.URL+"/openapi.json"); res.StatusCode != http.StatusOK {
		t.Errorf("after waiting Retry-After (%ds): %d, want 200", wait, res.StatusCode)
	}
}

func TestUntilAllowedFollowsTheSlidingWindow(t *testing.T) {
	const w = 60 * time.Second
	for _, tt := range []struct {
		elapsed           time.Duration
		prev, curr, limit int
		want              time.Duration
	}{
		{elapsed: 0, prev: 0, curr: 3, limit: 3, want: 60*time.Second + 20*time.Second}, // next window, once 3*(1-e/w) <= 2
		{elapsed: 30 * time.Second, prev: 0, curr: 3, limit: 3, want: 30*time.Second + 20*time.Second},
		{elapsed: 10 * time.Second, prev: 10, curr: 0, limit: 10, want: 0},                // 10*(5/6) = 8.3: fits now
		{elapsed: 0, prev: 10, curr: 0, limit: 10, want: 6 * time.Second},                 // 10*(1-e/w) <= 9 at 6s
		{elapsed: 0, prev: 10, curr: 9, limit: 10, want: 60 * time.Second},                // curr alone fills it: next window, at once
		{elapsed: 45 * time.Second, prev: 4, curr: 1, limit: 1, want: 15*time.Second + w}, // limit 1: the whole next window
	} {
		if got := untilAllowed(tt.elapsed, w, tt.prev, tt.curr, tt.limit); got != tt.want {
			t.Errorf("untilAllowed(%s, prev %d, curr %d, limit %d) = %s, want %s", tt.elapsed, tt.prev, tt.curr, tt.limit, got, tt.want)
		}
	}
}

func TestOneClientCannotTakeEveryStreamSlot(t *testing.T) {
	gate := make(chan struct{})
	st := &fakeExporter{pages: []pipeline.Page{page(`{"id":"a"}`), page(`{"id":"b"}`)}, gate: gate}
	srv, _ := serve(t, st, Config{MaxStreams: 4, TrustedProxies: []string{"127.0.0.0/8"}})
	first := get(t, srv.URL+"/getStream"+someRange, "X-Forwarded-For", "192.0.2.1")
	if line, _ := bufio.NewReader(first.Body).ReadString('\n'); line != "{\"id\":\"a\"}\n" {
		t.Fatalf("first stream: %q", line)
	}
	// A quarter of API_MAX_STREAMS by default: one.
	res := get(t, srv.URL+"/getStream"+someRange, "X-Forwarded-For", "192.0.2.1")
	if res.StatusCode == http.StatusOK {
		close(gate)
		t.Fatal("the same client got a second stream, want 429 too_many_client_streams")
	}
	body, _ := readAll(t, res)
	if res.StatusCode != http.StatusTooManyRequests || errorOf(t, body).Code != "too_many_client_streams" || res.Header.Get("Retry-After") == "" {
		t.Errorf("second stream of the same client: %d %s, want 429 too_many_client_streams with Retry-After", res.StatusCode, body)
	}
	other := get(t, srv.URL+"/getStream"+someRange, "X-Forwarded-For", "192.0.2.2")
	if other.StatusCode != http.StatusOK {
		t.Errorf("another client's stream: %d, want 200", other.StatusCode)
	}
	close(gate)
	io.ReadAll(first.Body)
	io.ReadAll(other.Body)
	if res := get(t, srv.URL+"/getStream"+someRange, "X-Forwarded-For", "192.0.2.1"); res.StatusCode != http.StatusOK {
		t.Errorf("after its stream ended, the first client: %d, want 200", res.StatusCode)
	}
}

func TestCORSAllowsOnlyTheConfiguredOrigins(t *testing.T) {
	srv, _ := serve(t, &fakeExporter{}, Config{CORSOrigins: []string{"https://app.example.com"}})
	for _, path := range []string{"/getJsonStream", "/getCounts"} {
		res := get(t, srv.URL+path+someRange, "Origin", "https://app.example.com")
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example.com" {
			t.Errorf("%s, allowed origin: Access-Control-Allow-Origin = %q", path, got)
		}
		// A page on that origin may read what its filter could not show.
		if got := res.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, unknownFieldsHeader) {
			t.Errorf("%s: Access-Control-Expose-Headers = %q, want %s among them", path, got, unknownFieldsHeader)
		}
	}
	res := get(t, srv.URL+"/getJsonStream"+someRange, "Origin", "https://evil.example")
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("other origin: Access-Control-Allow-Origin = %q, want none", got)
	}

	req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/getJsonStream", nil)
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Method", "GET")
	req.Header.Set("Access-Control-Request-Headers", "authorization")
	pre, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pre.Body.Close()
	if pre.StatusCode != http.StatusOK || pre.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		pre.Header.Get("Access-Control-Allow-Headers") != "Authorization" {
		t.Errorf("preflight: %d %v", pre.StatusCode, pre.Header)
	}

	t.Run("without CORS_ALLOWED_ORIGINS no origin is allowed", func(t *testing.T) {
		srv, _ := serve(t, &fakeExporter{}, Config{})
		res := get(t, srv.URL+"/getJsonStream"+someRange, "Origin", "https://app.example.com")
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("Access-Control-Allow-Origin = %q, want none", got)
		}
	})
}

func TestEveryResponseCarriesTheSecurityHeaders(t *testing.T) {
	want := map[string]string{
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
		"Content-Security-Policy": "frame-ancestors 'none'",
		"Referrer-Policy":         "no-referrer",
	}
	for _, hsts := range []bool{false, true} {
		t.Run(fmt.Sprint("HSTS ", hsts), func(t *testing.T) {
			h, err := NewServer(slog.New(slog.DiscardHandler), Config{HSTS: hsts}, &fakeExporter{err: errStoreDown}, nil, NewMetrics(prometheus.NewRegistry()))
			if err != nil {
				t.Fatal(err)
			}
			for _, path := range []string{"/healthz", "/getJsonStream" + someRange, "/getJsonStream", "/getCounts" + someRange, "/nowhere"} {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
				for name, value := range want {
					if got := rec.Header().Get(name); got != value {
						t.Errorf("%s (%d): %s = %q, want %q", path, rec.Code, name, got, value)
					}
				}
				got := rec.Header().Get("Strict-Transport-Security")
				if !hsts && got != "" || hsts && got != "max-age=31536000" {
					t.Errorf("%s: Strict-Transport-Security = %q with HSTS %v", path, got, hsts)
				}
			}
		})
	}
}

func TestUnknownPathsAndMethodsGetJSONErrors(t *testing.T) {
	srv, _ := serve(t, &fakeExporter{}, Config{})
	res := get(t, srv.URL+"/getJSONStream"+someRange)
	body, _ := readAll(t, res)
	if res.StatusCode != http.StatusNotFound || errorOf(t, body).Code != "not_found" {
		t.Errorf("unknown path: %d %s, want 404 not_found", res.StatusCode, body)
	}
	for _, method := range []string{http.MethodPost, http.MethodDelete, http.MethodPut} {
		req, _ := http.NewRequest(method, srv.URL+"/getJsonStream"+someRange, strings.NewReader("{}"))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := readAll(t, res)
		res.Body.Close()
		if res.StatusCode != http.StatusMethodNotAllowed || errorOf(t, body).Code != "method_not_allowed" || res.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %d %s Allow=%q, want 405 method_not_allowed with Allow: GET, HEAD", method, res.StatusCode, body, res.Header.Get("Allow"))
		}
	}
}

func TestStreamsBeyondTheLimitAreTurnedAway(t *testing.T) {
	gate := make(chan struct{})
	st := &fakeExporter{pages: []pipeline.Page{page(`{"id":"a"}`), page(`{"id":"b"}`)}, gate: gate}
	srv, _ := serve(t, st, Config{MaxStreams: 1, SlotWait: 200 * time.Millisecond, TrustedProxies: []string{"127.0.0.0/8"}})
	first := get(t, srv.URL+"/getStream"+someRange, "X-Forwarded-For", "192.0.2.1") // holds the only slot until the gate opens
	line, _ := bufio.NewReader(first.Body).ReadString('\n')
	if line != "{\"id\":\"a\"}\n" {
		t.Fatalf("first stream: %q", line)
	}
	res := get(t, srv.URL+"/getStream"+someRange, "X-Forwarded-For", "192.0.2.2")
	body, _ := readAll(t, res)
	if res.StatusCode != http.StatusServiceUnavailable || errorOf(t, body).Code != "too_many_streams" || res.Header.Get("Retry-After") == "" {
		t.Errorf("second stream: %d %s, want 503 too_many_streams with Retry-After", res.StatusCode, body)
	}
	close(gate)
	io.ReadAll(first.Body)
	if res := get(t, srv.URL+"/getStream"+someRange); res.StatusCode != http.StatusOK {
		t.Errorf("after the first stream ended: %d, want 200", res.StatusCode)
	}
}

func TestMetricsCountRequestsDocumentsAndQueries(t *testing.T) {
	st := &fakeExporter{pages: []pipeline.Page{page(`{"id":"a"}`, `{"id":"b"}`), page(`{"id":"c"}`)}}
	m := NewMetrics(admin.NewRegistry())
	m.ObserveQuery("search", 30*time.Millisecond, nil)
	m.ObserveQuery("open_pit", time.Millisecond, errStoreDown)
	h, err := NewServer(slog.New(slog.DiscardHandler), Config{}, st, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	readAll(t, get(t, srv.URL+"/getJsonStream"+someRange))
	readAll(t, get(t, srv.URL+"/getJsonStream?start_date=x"))
	readAll(t, get(t, srv.URL+"/nowhere/42"))

	body, _ := readAll(t, get(t, srv.URL+"/metrics"))
	for _, want := range []string{
		`backend_http_requests_total{code="200",route="/getJsonStream"} 1`,
		`backend_http_requests_total{code="400",route="/getJsonStream"} 1`,
		`backend_http_requests_total{code="404",route="unmatched"} 1`,
		`backend_http_request_duration_seconds_count{route="/getJsonStream"} 2`,
		`backend_documents_streamed_total{route="/getJsonStream"} 3`,
		`backend_elasticsearch_request_duration_seconds_count{operation="search"} 1`,
		`backend_elasticsearch_request_failures_total{cause="error",operation="open_pit"} 1`,
		`backend_streams_in_flight 0`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestTheAccessLogIsJSONWithoutSecrets(t *testing.T) {
	const key = "k-0123456789abcdef"
	st := &fakeExporter{pages: []pipeline.Page{page(`{"id":"a"}`, `{"id":"b"}`)}}
	srv, logs := serve(t, st, Config{APIKeys: []string{key}})
	readAll(t, get(t, srv.URL+"/getStream"+someRange+"&order=desc", "Authorization", "Bearer "+key, "User-Agent", "test-agent"))
	readAll(t, get(t, srv.URL+"/getStream"+someRange+"&token=hunter2secret", "X-API-Key", key))

	var entries []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		entries = append(entries, e)
	}
	if len(entries) != 2 {
		t.Fatalf("%d log lines, want 2:\n%s", len(entries), logs.String())
	}
	first := entries[0]
	for field, want := range map[string]any{
		"msg": "request", "method": "GET", "path": "/getStream", "route": "/getStream", "status": float64(200),
		"documents": float64(2), "user_agent": "test-agent", "client": "127.0.0.1",
		"query": "end_date=2023-03-09T19%3A45%3A00&order=desc&start_date=2023-03-09T19%3A40%3A00",
	} {
		if first[field] != want {
			t.Errorf("log field %s = %v, want %v", field, first[field], want)
		}
	}
	if _, ok := first["duration_ms"]; !ok {
		t.Errorf("log line lacks duration_ms: %v", first)
	}
	if entries[1]["status"] != float64(400) || !strings.Contains(fmt.Sprint(entries[1]["query"]), "token=REDACTED") {
		t.Errorf("second line = %v, want a 400 with the unknown parameter's value redacted", entries[1])
	}
	for _, secret := range []string{key, "hunter2secret"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log contains %q:\n%s", secret, logs.String())
		}
	}
}

// permanentError is a store failure that retrying cannot fix, as the store reports
// a query Elasticsearch rejects.
type permanentError struct{ msg string }

func (e permanentError) Error() string   { return e.msg }
func (e permanentError) Temporary() bool { return false }
func (e permanentError) StatusCode() int { return http.StatusBadRequest }

// A connection reset also says it is not temporary (net.OpError's deprecated
// Temporary), yet it is an unreachable store, not a rejected query.
func TestAResetConnectionToTheStoreIsA503NotA502(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	if reset.Temporary() {
		t.Fatal("the premise: a reset net.OpError says it is not temporary")
	}
	srv, _ := serve(t, &fakeExporter{err: fmt.Errorf("open point in time: %w", reset)}, Config{})
	res := get(t, srv.URL+"/getJsonStream"+someRange)
	body, _ := readAll(t, res)
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "elasticsearch_unavailable") {
		t.Errorf("got %d %s, want 503 elasticsearch_unavailable", res.StatusCode, body)
	}
}

var eventID = regexp.MustCompile(`(?m)^id: [A-Za-z0-9_-]+\n`)

// withoutEventIDs checks that body has n SSE event ids (opaque cursors), and
// returns it without them.
func withoutEventIDs(t *testing.T, body string, n int) string {
	t.Helper()
	if got := len(eventID.FindAllString(body, -1)); got != n {
		t.Errorf("%d event ids in %q, want %d", got, body, n)
	}
	return eventID.ReplaceAllString(body, "")
}
