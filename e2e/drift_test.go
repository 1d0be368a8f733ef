//go:build integration

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// The drift fixtures: producers whose fields change type from one message to the
// next, as free-form annotations from several models and firmware versions do.
// Whatever the mapping the first message of a day gives a field, no valid message
// may be dead-lettered for it, every document must be served exactly as it was
// published, and what could not be indexed must be visible on the document.

// driftKinds are the JSON values one field takes, in turn, in the pair fixtures.
var driftKinds = []struct{ name, value string }{
	{"string", `"cam-07"`},
	{"integer", `42`},
	{"float", `0.75`},
	{"boolean", `true`},
	{"object", `{"model":"yolo","version":8}`},
	{"datelike", `"2026-12-05 10:00:00"`},
}

// conflicts says whether a field first mapped from a value of kind first cannot
// index a value of kind then. Elasticsearch coerces the rest: any value into a
// keyword, 0.75 into a long, 42 into a float.
func conflicts(first, then string) bool {
	number := func(k string) bool { return k == "integer" || k == "float" }
	switch {
	case (first == "object") != (then == "object"):
		return true // set aside under @unindexed
	case number(first):
		return !number(then) // ignore_malformed: listed in _ignored
	case first == "boolean":
		return then != "boolean"
	}
	return false
}

// driftFixture is one case: the messages it publishes, in order, each on the
// day of its index (0, 1 or 2), and which of them are expected to be stored with
// a field not indexed.
type driftFixture struct {
	name     string
	messages []driftMessage
}

type driftMessage struct {
	day     int
	body    string // a JSON object, without the row and @timestamp the test adds
	partial bool   // one of its fields cannot be indexed
}

func driftFixtures() []driftFixture {
	var out []driftFixture
	// Each pair of kinds for one field, in both orders: within one day's index,
	// and across days, where the next day's index maps the field from the second.
	for _, a := range driftKinds {
		for _, b := range driftKinds {
			if a == b {
				continue
			}
			f := "f_" + a.name + "_" + b.name
			out = append(out, driftFixture{name: a.name + "-then-" + b.name, messages: []driftMessage{
				{day: 0, body: `{"` + f + `":` + a.value + `}`},
				{day: 0, body: `{"` + f + `":` + b.value + `}`, partial: conflicts(a.name, b.name)},
				{day: 1, body: `{"` + f + `":` + b.value + `}`},
				{day: 1, body: `{"` + f + `":` + a.value + `}`, partial: conflicts(b.name, a.name)},
			}})
		}
	}
	wide := make([]string, 5000)
	for i := range wide {
		wide[i] = fmt.Sprintf(`"k%d":%d`, i, i)
	}
	deep := func(levels int) string {
		return strings.Repeat(`{"d":`, levels) + `1` + strings.Repeat(`}`, levels)
	}
	return append(out,
		// The timestamp field itself, as the issue found it: an epoch in
		// milliseconds first, then the forms that used to be refused.
		driftFixture{name: "timestamp-field", messages: []driftMessage{
			{body: `{"timestamp":1678442405123}`},
			{body: `{"timestamp":"2023-03-10T10:00:06Z"}`, partial: true},
			{body: `{"timestamp":"yesterday"}`, partial: true},
			{body: `{"timestamp":"2026-12-05 10:00:00"}`, partial: true},
			{body: `{"timestamp":true}`, partial: true},
			{body: `{"timestamp":"10000-01-01T00:00:00Z"}`, partial: true},
		}},
		driftFixture{name: "array-of-mixed-scalars", messages: []driftMessage{
			{body: `{"mixed":[1,"two",true,null,2.5]}`, partial: true},
		}},
		driftFixture{name: "array-of-scalars-and-objects", messages: []driftMessage{
			{body: `{"mixed2":[1,{"x":1}]}`, partial: true},
		}},
		driftFixture{name: "array-of-objects-of-two-shapes", messages: []driftMessage{
			{body: `{"labels":[{"label":"person","confidence":0.9},{"label":"car","confidence":{"low":0.2,"high":0.4}}]}`, partial: true},
			// The first was stored with labels set aside, so it mapped nothing:
			// this one maps labels.confidence as a keyword.
			{body: `{"labels":[{"label":"dog","confidence":"high"}]}`},
			{body: `{"labels":"none"}`, partial: true},
		}},
		driftFixture{name: "arrays-of-arrays", messages: []driftMessage{
			{body: `{"grid":[[1,2],[3,4]]}`},
			{body: `{"grid":[["a"],[true]]}`, partial: true},
		}},
		driftFixture{name: "object-deepens", messages: []driftMessage{
			{body: `{"meta":{"fw":"1.2"}}`},
			{body: `{"meta":{"fw":{"major":1,"minor":3}}}`, partial: true},
			{body: `{"meta":"unknown"}`, partial: true},
		}},
		// On a day of its own: it fills its index's mapping to the field limit, and
		// any new field of that day is then listed in _ignored.
		driftFixture{name: "five-thousand-keys", messages: []driftMessage{
			{day: 2, body: `{"wide":{` + strings.Join(wide, ",") + `}}`, partial: true},
			{day: 2, body: `{"after_wide":"still served"}`, partial: true},
		}},
		driftFixture{name: "deep-nesting", messages: []driftMessage{
			{body: `{"deep30":` + deep(30) + `}`, partial: true},
			{body: `{"deep500":` + deep(500) + `}`, partial: true},
		}},
		driftFixture{name: "date-like-strings-in-other-fields", messages: []driftMessage{
			{body: `{"note":"2026-12-05"}`},
			{body: `{"note":"2026-12-05T10:00:00Z"}`},
			{body: `{"note":"1796520000"}`},
			{body: `{"note":"not a date at all"}`},
			{body: `{"serial":"1796520000123"}`},
			{body: `{"serial":"SN-0042"}`},
		}},
		driftFixture{name: "names-no-index-takes", messages: []driftMessage{
			{body: `{"":"empty name"}`, partial: true},
			{body: `{"a..b":1}`, partial: true},
			{body: `{".hidden":1}`, partial: true},
			{body: `{"nested":{"":1,"ok":2}}`, partial: true},
			{body: `{"_id":"mine"}`, partial: true},
			{body: `{"_routing":"r1"}`, partial: true},
		}},
		driftFixture{name: "dotted-names-against-objects", messages: []driftMessage{
			{body: `{"pose":{"x":1}}`},
			{body: `{"pose.x":{"deg":90}}`, partial: true},
			{body: `{"pose.x":7}`},
		}},
	)
}

// TestNoValidMessageIsDeadLetteredForWhatOthersPutInTheMapping publishes every
// drift fixture through NATS to the webserver and reads the documents back
// through the backend.
func TestNoValidMessageIsDeadLetteredForWhatOthersPutInTheMapping(t *testing.T) {
	t.Parallel()
	fixtures := driftFixtures()
	if len(fixtures) < 30 {
		t.Fatalf("%d drift fixtures; the set is to hold at least 30", len(fixtures))
	}
	h := newHarness(t)
	ws := h.startWebserver(nil)

	// Event times in the past days, well within any accepted window.
	day0 := time.Now().UTC().Truncate(24 * time.Hour).Add(-72 * time.Hour)
	type sent struct {
		row     string
		body    []byte // as published
		partial bool
	}
	// The n-th messages of all fixtures are published together, and only once
	// the (n-1)-th are stored: within a fixture, each message meets the mapping
	// the ones before it made, however the webserver batches them.
	var all []sent
	for n := 0; ; n++ {
		var phase []sent
		for _, f := range fixtures {
			if n >= len(f.messages) {
				continue
			}
			m := f.messages[n]
			row := fmt.Sprintf("%s/%d", f.name, n)
			at := day0.Add(time.Duration(m.day)*24*time.Hour + time.Duration(len(all)+len(phase))*time.Second)
			body := fmt.Sprintf(`{"row":%q,"@timestamp":%q,`, row, at.Format(time.RFC3339Nano)) + strings.TrimPrefix(m.body, "{")
			if !json.Valid([]byte(body)) {
				t.Fatalf("fixture %s is not valid JSON: %.200s", row, body)
			}
			phase = append(phase, sent{row: row, body: []byte(body), partial: m.partial})
		}
		if len(phase) == 0 {
			break
		}
		for _, s := range phase {
			if _, err := h.js.Publish(h.ctx, "annotations.cam-01", s.body, jetstream.WithMsgID(s.row)); err != nil {
				t.Fatal(err)
			}
		}
		h.waitIngested(time.Minute)
		all = append(all, phase...)
	}

	if reasons, _ := h.deadLetters(len(all)); len(reasons) > 0 {
		t.Errorf("valid messages dead-lettered: %s", summarize(reasons))
	}

	// Served exactly as published, plus the @ fields.
	b := startBackendProcess(t, map[string]string{"ES_INDEX_PREFIX": h.prefix})
	testenv.WaitHTTP(t, "http://"+b.listen+"/healthz", 30*time.Second)
	served := servedByRow(t, "http://"+b.listen+"/getJsonStream?start_date="+day0.Format("2006-01-02")+
		"&end_date="+time.Now().UTC().Add(48*time.Hour).Format("2006-01-02"))
	for _, s := range all {
		doc, ok := served[s.row]
		if !ok {
			t.Errorf("%s: not served", s.row)
			continue
		}
		if want := decodeUseNumber(t, s.body); !reflect.DeepEqual(withoutPipelineFields(doc), want) {
			t.Errorf("%s: served\n%.300s\nwant\n%.300s", s.row, mustJSON(doc), s.body)
		}
	}
	if len(served) != len(all) {
		t.Errorf("%d documents served for %d messages", len(served), len(all))
	}
	// A field set aside comes back when a request asks for it by name.
	some := servedByRow(t, "http://"+b.listen+"/getJsonStream?fields=row,meta&start_date="+day0.Format("2006-01-02")+
		"&end_date="+time.Now().UTC().Add(48*time.Hour).Format("2006-01-02"))
	for _, s := range all {
		if !strings.HasPrefix(s.row, "object-deepens/") {
			continue
		}
		want := decodeUseNumber(t, s.body)
		if got := some[s.row]; !reflect.DeepEqual(got, map[string]any{"row": s.row, "meta": want["meta"]}) {
			t.Errorf("%s with fields=row,meta: served %s", s.row, mustJSON(got))
		}
	}

	// What can be indexed stays searchable: every row, by its own field.
	refresh(t, h.esURL, h.prefix)
	for _, s := range all {
		if n := esCount(t, h.esURL, h.prefix, `{"term":{"row":`+fmt.Sprintf("%q", s.row)+`}}`); n != 1 {
			t.Errorf("%s: a search for its row finds %d documents, want 1", s.row, n)
		}
	}

	// What cannot is visible on the document: _ignored or @unindexed.fields.
	partial := partlyIndexedRows(t, h.esURL, h.prefix)
	var missed, extra []string
	for _, s := range all {
		switch _, got := partial[s.row]; {
		case s.partial && !got:
			missed = append(missed, s.row)
		case !s.partial && got:
			extra = append(extra, s.row+" "+fmt.Sprint(partial[s.row]))
		}
	}
	if len(missed)+len(extra) > 0 {
		t.Errorf("documents flagged as partly indexed: %d expected but not flagged %q, %d flagged but not expected %q",
			len(missed), missed, len(extra), extra)
	}
	setAside := esCount(t, h.esURL, h.prefix, `{"exists":{"field":"@unindexed.fields"}}`)
	if got := scrape(t, ws.admin+"/metrics")["webserver_documents_set_aside_total"]; got != float64(setAside) {
		t.Errorf("webserver_documents_set_aside_total = %v, want the %d documents stored with @unindexed", got, setAside)
	}
	// The webserver_documents_partly_indexed gauge's count.
	st, err := store.New(store.Config{Addresses: []string{h.esURL}, IndexPrefix: h.prefix})
	if err != nil {
		t.Fatal(err)
	}
	ignored, aside, err := st.PartlyIndexed(t.Context())
	if want := esCount(t, h.esURL, h.prefix, `{"exists":{"field":"_ignored"}}`); err != nil || ignored != int64(want) || aside != int64(setAside) {
		t.Errorf("PartlyIndexed = %d ignored, %d set aside, %v; want %d and %d", ignored, aside, err, want, setAside)
	}
	t.Logf("%d fixtures, %d messages: %d partly indexed, %d of them with fields set aside", len(fixtures), len(all), len(partial), setAside)
}

// servedByRow reads a getJsonStream answer and returns its documents by row.
func servedByRow(t *testing.T, url string) map[string]map[string]any {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, res.Status, body)
	}
	var docs []map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&docs); err != nil {
		t.Fatalf("getJsonStream answer: %v", err)
	}
	out := map[string]map[string]any{}
	for _, d := range docs {
		row, _ := d["row"].(string)
		if _, twice := out[row]; twice {
			t.Errorf("%s: served twice", row)
		}
		out[row] = d
	}
	return out
}

// withoutPipelineFields is a served document without what the pipeline adds:
// @nats, and @timestamp_original put back as the producer's @timestamp.
func withoutPipelineFields(doc map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range doc {
		out[k] = v
	}
	delete(out, "@nats")
	if orig, ok := out["@timestamp_original"]; ok {
		out["@timestamp"] = orig
		delete(out, "@timestamp_original")
	}
	return out
}

func decodeUseNumber(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// esCount counts the documents of prefix's indices that query matches.
func esCount(t *testing.T, esURL, prefix, query string) int {
	t.Helper()
	var res struct {
		Count int `json:"count"`
	}
	testenv.ESJSON(t, http.MethodPost, esURL+"/"+prefix+"-*/_count", []byte(`{"query":`+query+`}`), &res)
	return res.Count
}

// partlyIndexedRows finds the documents an operator is told to look for (see the
// docs/guarantees.md's mapping policy): those with fields in _ignored or set aside under
// @unindexed, by row, with those fields.
func partlyIndexedRows(t *testing.T, esURL, prefix string) map[string][]string {
	t.Helper()
	var res struct {
		Hits struct {
			Hits []struct {
				Ignored []string `json:"_ignored"`
				Source  struct {
					Row   string `json:"row"`
					Aside struct {
						Fields []string `json:"fields"`
					} `json:"@unindexed"`
				} `json:"_source"`
			} `json:"hits"`
		} `json:"hits"`
	}
	query := `{"size":1000,"_source":["row","@unindexed.fields"],"query":{"bool":{"should":[` +
		`{"exists":{"field":"_ignored"}},{"exists":{"field":"@unindexed.fields"}}]}}}`
	testenv.ESJSON(t, http.MethodPost, esURL+"/"+prefix+"-*/_search", []byte(query), &res)
	out := map[string][]string{}
	for _, h := range res.Hits.Hits {
		out[h.Source.Row] = slices.Concat(h.Ignored, h.Source.Aside.Fields)
	}
	return out
}
