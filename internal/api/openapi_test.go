package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// specValidator checks real responses against the served /openapi.json.
type specValidator struct {
	doc    *openapi3.T
	router routers.Router
}

func newSpecValidator(t *testing.T) *specValidator {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openAPIDocument)
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI document: %v", err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	// The description gives a sequential body as the array of its records; these
	// decoders read them that way.
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", decodeNDJSON)
	openapi3filter.RegisterBodyDecoder("text/event-stream", decodeSSE)
	for _, pageType := range []string{"text/html", "text/javascript", "text/css"} { // the page at /
		openapi3filter.RegisterBodyDecoder(pageType, openapi3filter.PlainBodyDecoder)
	}
	return &specValidator{doc: doc, router: router}
}

// check fails the test unless the response to req, whose body was body, is one
// the description allows. A route the description lacks must answer an Error.
func (v *specValidator) check(t *testing.T, req *http.Request, res *http.Response, body []byte) {
	t.Helper()
	route, pathParams, err := v.router.FindRoute(req)
	if err != nil {
		var doc any
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatalf("%s %s: %d body is not JSON: %q", req.Method, req.URL, res.StatusCode, body)
		}
		schema := v.doc.Components.Schemas["Error"].Value
		if err := schema.VisitJSON(doc, openapi3.EnableJSONSchema2020()); err != nil {
			t.Errorf("%s %s: %d body is not an Error: %v", req.Method, req.URL, res.StatusCode, err)
		}
		return
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: pathParams, Route: route, Options: opts}
	if res.StatusCode == http.StatusOK {
		// What the backend accepts, the description must accept too.
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			t.Errorf("%s %s was served, but the description rejects the request: %v", req.Method, req.URL, err)
		}
	}
	err = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 res.StatusCode,
		Header:                 res.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                opts,
	})
	if err != nil {
		t.Errorf("%s %s: the %d response does not match the description: %v", req.Method, req.URL, res.StatusCode, err)
	}
}

func decodeNDJSON(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	records := []any{}
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var v any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return nil, fmt.Errorf("NDJSON line %q: %w", sc.Text(), err)
		}
		records = append(records, v)
	}
	return records, sc.Err()
}

func decodeSSE(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	events, err := parseSSE(body)
	if err != nil {
		return nil, err
	}
	records := make([]any, 0, len(events))
	for _, e := range events {
		if e.data == "" {
			// A keep-alive: a comment and a bare id, which EventSource takes
			// as the position without firing an event.
			continue
		}
		var data any
		if err := json.Unmarshal([]byte(e.data), &data); err != nil {
			return nil, fmt.Errorf("SSE data %q: %w", e.data, err)
		}
		record := map[string]any{"event": e.event, "data": data}
		if e.id != "" {
			record["id"] = e.id
		}
		records = append(records, record)
	}
	return records, nil
}

type sseEvent struct{ event, data, id string }

// parseSSE reads the events of a text/event-stream body; an event without a name
// is a "message", as EventSource has it.
func parseSSE(body io.Reader) ([]sseEvent, error) {
	var events []sseEvent
	cur := sseEvent{event: "message"}
	onlyComments := true // a block of comments alone is no event
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line != "" && !strings.HasPrefix(line, ":") {
			onlyComments = false
		}
		switch {
		case line == "" && onlyComments:
		case line == "":
			events = append(events, cur)
			cur, onlyComments = sseEvent{event: "message"}, true
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data += strings.TrimPrefix(line, "data: ")
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, ":"): // a comment
		default:
			return nil, fmt.Errorf("unexpected SSE line %q", line)
		}
	}
	return events, sc.Err()
}

func TestTheOpenAPIDocumentIsServedAndValid(t *testing.T) {
	v := newSpecValidator(t)
	srv, _ := serve(t, &fakeExporter{}, Config{})
	res := get(t, srv.URL+"/openapi.json")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" || !bytes.Equal(body, openAPIDocument) {
		t.Fatalf("/openapi.json: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if v.doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", v.doc.OpenAPI)
	}
	// Every route NewServer serves is described, and nothing else.
	want := []string{"/", "/app.css", "/app.js", "/getCounts", "/getJsonStream", "/getStream", "/healthz", "/metrics", "/openapi.json", "/readyz"}
	if got := v.doc.Paths.InMatchingOrder(); len(got) != len(want) {
		t.Errorf("described paths = %v, want %v", got, want)
	}
	for _, p := range want {
		if v.doc.Paths.Find(p) == nil {
			t.Errorf("%s is not described", p)
		}
	}
	// Every error code the code can produce is in the Error schema.
	codes := v.doc.Components.Schemas["Error"].Value.Properties["error"].Value.Properties["code"].Value.Enum
	for _, code := range []string{"missing_parameter", "unknown_parameter", "invalid_parameter", "invalid_range", "range_too_long",
		"unauthorized", "rate_limited", "not_found", "method_not_allowed", "elasticsearch_error", "elasticsearch_unavailable",
		"elasticsearch_timeout", "elasticsearch_red", "too_many_streams", "stream_interrupted", "internal_error", "invalid_query", "too_many_client_streams", "headers_too_large", "too_many_buckets"} {
		found := false
		for _, c := range codes {
			found = found || c == code
		}
		if !found {
			t.Errorf("error code %s is not in the description", code)
		}
	}
}

func TestTheServedDescriptionListsAnonymousAccessOnlyWithoutKeys(t *testing.T) {
	for _, keys := range [][]string{nil, {"a-key-of-sixteen-chars-or-more"}} {
		srv, _ := serve(t, &fakeExporter{}, Config{APIKeys: keys})
		res := get(t, srv.URL+"/openapi.json")
		body, _ := io.ReadAll(res.Body)
		doc, err := openapi3.NewLoader().LoadFromData(body)
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/getJsonStream", "/getStream", "/getCounts", "/metrics", "/healthz"} {
			op := doc.Paths.Find(path).Get
			anonymous := op.Security == nil || len(*op.Security) == 0
			if op.Security != nil {
				for _, req := range *op.Security {
					anonymous = anonymous || len(req) == 0
				}
			}
			// The probes are open either way; the rest only without keys.
			if want := len(keys) == 0 || path == "/healthz"; anonymous != want {
				t.Errorf("keys %q: %s allows anonymous access: %v, want %v", keys, path, anonymous, want)
			}
		}
	}
}

// The description's pattern for start_date and end_date accepts exactly what the
// backend reads, so that generated clients and the server agree. (What a pattern
// cannot say: February 29 of a year that is not a leap year, and an offset
// that moves 9999-12-31 into the year 10000.)
func TestTheDatePatternAcceptsWhatTheParserAccepts(t *testing.T) {
	v := newSpecValidator(t)
	pattern := regexp.MustCompile(v.doc.Components.Parameters["StartDate"].Value.Schema.Value.Pattern)
	if end := v.doc.Components.Parameters["EndDate"].Value.Schema.Value.Pattern; end != pattern.String() {
		t.Errorf("end_date's pattern differs from start_date's")
	}
	for _, s := range []string{
		"00", "2023", "2023-03", "2023-03-09", "2023-3-09", "2023-03-9", "2023-02-30", "2023-04-31", "2023-13-01", "2023-00-10",
		"2023-03-09T19", "2023-03-09T19:40", "2023-03-09T1:40", "2023-03-09T19:4", "2023-03-09T24:00", "2023-03-09T19:60",
		"2023-03-09T19:40:00", "2023-03-09T19:40:00.123", "2023-03-09T19:40:00,5", "2023-03-09T19:40:00.", "2023-03-09T19:40.5",
		"2023-03-09T19:40:00Z", "2023-03-09T19:40Z", "2023-03-09T19:40:00z", "2023-03-09t19:40:00Z", "2023-03-09T19:40:60Z",
		"2023-03-09T19:40:00.123456789Z", "2023-03-09T19:40:00+01:00", "2023-03-09T19:40:00-05:30", "2023-03-09T19:40:00+24:00",
		"2023-03-09T19:40:00+25:00", "2023-03-09T19:40:00+00:60", "2023-03-09T19:40:00+0100", "2023-03-09T19:40:00 01:00",
		"2023-03-09T1:40:00Z", "2023-03-09 19:40:00", "2023-03-09T19:40:00ZZ", "+2023-03-09", "0000-01-01", "9999-12-31T23:59:59Z",
		"2023-03-09T19:40:00.5 01:00", "2023-03-09T19:40:00  01:00", "yesterday", "",
	} {
		_, err := parseDate(s, time.UTC)
		if parsed, matched := err == nil, pattern.MatchString(s); parsed != matched {
			t.Errorf("%q: the parser accepts it: %v, the pattern: %v", s, parsed, matched)
		}
	}
}

func TestTheFieldsPatternHoldsTheLimits(t *testing.T) {
	v := newSpecValidator(t)
	var fields *openapi3.Parameter
	for _, p := range v.doc.Components.Parameters {
		if p.Value.Name == "fields" {
			fields = p.Value
		}
	}
	pattern := regexp.MustCompile(fields.Schema.Value.Pattern)
	if fields.Schema.Value.MaxLength == nil {
		t.Fatal("fields has no maxLength")
	}
	maxLength := int(*fields.Schema.Value.MaxLength)
	if want := maxFields*maxFieldLength + maxFields - 1; maxLength != want {
		t.Errorf("fields maxLength = %d, want %d (%d names of %d characters)", maxLength, want, maxFields, maxFieldLength)
	}
	name := func(n int) string { return strings.Repeat("a", n) }
	longList := func(n int) string { return strings.TrimSuffix(strings.Repeat(name(maxFieldLength)+",", n), ",") }
	// The number of names (at most maxFields) is said in the description: the
	// regular expressions of OpenAPI tools (RE2 among them) cannot count that far.
	for _, s := range []string{"@timestamp,camera_id", "objects.*", name(maxFieldLength), name(maxFieldLength + 1),
		longList(maxFields), longList(maxFields) + ",a", "a,,b", "a b", ""} {
		_, err := parseFields(s)
		if parsed, matched := err == nil && s != "", pattern.MatchString(s) && len(s) <= maxLength; parsed != matched {
			t.Errorf("%.40q: the parser accepts it: %v, the pattern: %v", s, parsed, matched)
		}
	}
}

// Every error code the handlers can answer is one the description lists, so a
// client generated from it can switch on them.
func TestEveryErrorCodeIsDescribed(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas struct {
				Error struct {
					Properties struct {
						Error struct {
							Properties struct {
								Code struct {
									Enum []string `json:"enum"`
								} `json:"code"`
							} `json:"properties"`
						} `json:"error"`
					} `json:"properties"`
				} `json:"Error"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	described := doc.Components.Schemas.Error.Properties.Error.Properties.Code.Enum
	sources, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`Code:\s+"([a-z_]+)"`)
	for _, name := range sources {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range used.FindAllSubmatch(src, -1) {
			if code := string(m[1]); !slices.Contains(described, code) {
				t.Errorf("%s answers error code %q, which openapi.json's Error schema does not list", name, code)
			}
		}
	}
}
