package query

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// demo is the mapping of the demo frames, as the index template makes it, with
// a text field and a dotted keyword besides.
var demo = Caps{
	"@timestamp": {"date": nil}, "camera_id": {"keyword": nil}, "model": {"keyword": nil},
	"frame": {"long": nil}, "tags": {"keyword": nil}, "note": {"text": nil}, "meta": {"object": nil},
	"meta.fw": {"keyword": nil}, "labels": {"nested": nil}, "labels.label": {"keyword": nil},
	"labels.confidence": {"float": nil}, "a": {"keyword": nil}, "b": {"keyword": nil}, "c": {"keyword": nil},
	"online": {"boolean": nil}, "addr": {"ip": nil}, "where": {"geo_point": nil},
}

// build parses q and builds its query against the demo mapping.
func build(q string) (Query, Notes, error) {
	e, err := Parse(q)
	if err != nil {
		return nil, Notes{}, err
	}
	return e.Query(demo, time.UTC)
}

func TestEachConstructBuildsItsQuery(t *testing.T) {
	tests := []struct{ q, want string }{
		{``, `null`},
		{`   `, `null`},
		{`camera_id:cam-07`, `{"match":{"camera_id":{"lenient":true,"query":"cam-07"}}}`},
		{`frame:42`, `{"match":{"frame":{"lenient":true,"query":"42"}}}`},
		{`model:"yolo v8"`, `{"match":{"model":{"lenient":true,"query":"yolo v8"}}}`},
		{`note:"say \"hi\""`, `{"multi_match":{"fields":["note"],"lenient":true,"query":"say \"hi\"","type":"phrase"}}`},
		{`camera_id:cam-*`, `{"prefix":{"camera_id":{"value":"cam-"}}}`},
		{`camera_id:cam\*7`, `{"match":{"camera_id":{"lenient":true,"query":"cam*7"}}}`},
		{`camera_id:*`, `{"exists":{"field":"camera_id"}}`},
		{`labels:*`, `{"bool":{"minimum_should_match":1,"should":[{"nested":{"ignore_unmapped":true,"path":"labels","query":{"match_all":{}}}},{"exists":{"field":"labels"}}]}}`},
		{`frame >= 10`, `{"range":{"frame":{"gte":"10"}}}`},
		{`frame>10`, `{"range":{"frame":{"gt":"10"}}}`},
		{`@timestamp < "2023-03-09T19:45:00Z"`, `{"range":{"@timestamp":{"lt":"2023-03-09T19:45:00Z"}}}`},
		{`@timestamp >= "2023-03-09T20:45:00+01:00"`, `{"range":{"@timestamp":{"gte":"2023-03-09T19:45:00Z"}}}`},
		{`online < true`, `{"range":{"online":{"lt":"true"}}}`},
		{`addr >= 10.0.0.1`, `{"range":{"addr":{"gte":"10.0.0.1"}}}`},
		{`labels.label:person`, `{"nested":{"ignore_unmapped":true,"path":"labels","query":{"match":{"labels.label":{"lenient":true,"query":"person"}}}}}`},
		{`frame <= 10`, `{"range":{"frame":{"lte":"10"}}}`},
		{`camera_id:(cam-01 or cam-02)`, `{"bool":{"minimum_should_match":1,"should":[` +
			`{"match":{"camera_id":{"lenient":true,"query":"cam-01"}}},{"match":{"camera_id":{"lenient":true,"query":"cam-02"}}}]}}`},
		{`tags:(a and not b)`, `{"bool":{"filter":[{"match":{"tags":{"lenient":true,"query":"a"}}},` +
			`{"bool":{"must_not":[{"match":{"tags":{"lenient":true,"query":"b"}}}]}}]}}`},
		{`not camera_id:cam-01`, `{"bool":{"must_not":[{"match":{"camera_id":{"lenient":true,"query":"cam-01"}}}]}}`},
		{`a:1 OR b:2 and c:3`, `{"bool":{"minimum_should_match":1,"should":[{"match":{"a":{"lenient":true,"query":"1"}}},` +
			`{"bool":{"filter":[{"match":{"b":{"lenient":true,"query":"2"}}},{"match":{"c":{"lenient":true,"query":"3"}}}]}}]}}`},
		{`(a:1 or b:2) and c:3`, `{"bool":{"filter":[{"bool":{"minimum_should_match":1,"should":[` +
			`{"match":{"a":{"lenient":true,"query":"1"}}},{"match":{"b":{"lenient":true,"query":"2"}}}]}},{"match":{"c":{"lenient":true,"query":"3"}}}]}}`},
		{`labels:{ label:person and confidence >= 0.8 }`, `{"nested":{"ignore_unmapped":true,"path":"labels","query":{"bool":{"filter":[` +
			`{"match":{"labels.label":{"lenient":true,"query":"person"}}},{"range":{"labels.confidence":{"gte":"0.8"}}}]}}}}`},
		{`meta.fw:"1.2"`, `{"match":{"meta.fw":{"lenient":true,"query":"1.2"}}}`},
	}
	for _, tt := range tests {
		q, notes, err := build(tt.q)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.q, err)
			continue
		}
		if len(notes.Unknown)+len(notes.Warnings) > 0 {
			t.Errorf("Parse(%q): notes %+v for fields the mapping has", tt.q, notes)
		}
		got, _ := json.Marshal(q)
		if string(got) != tt.want {
			t.Errorf("Parse(%q) =\n%s\nwant\n%s", tt.q, got, tt.want)
		}
	}
}

// Each hostile or malformed q is refused before it reaches Elasticsearch, with
// the position where reading stopped.
func TestBadQueriesAreRefusedWithTheirPosition(t *testing.T) {
	tests := []struct {
		q    string
		pos  int
		says string
	}{
		{`camera_id:`, 11, "ends where a value"},
		{`camera_id`, 1, "has no field"},
		{`cam-07`, 1, "has no field"},
		{`camera_id:cam-07 and`, 21, "ends where a field name"},
		{`(camera_id:cam-07`, 18, "closing parenthesis for the one at character 1"},
		{`camera_id:cam-07)`, 17, `")" where and, or`},
		{`camera_id:*cam`, 11, "leading or inner wildcard"},
		{`camera_id:c*m`, 12, "leading or inner wildcard"},
		{`camera_id:cam**`, 14, "only end a value, once"},
		{`camera_id:/cam.*/`, 11, "regular expressions"},
		{`note:"unterminated`, 6, "never closed"},
		{`frame => 5`, 7, "where : or a comparison"},
		{`frame ~ 5`, 7, "where : or a comparison"},
		{`frame >= `, 10, "a number, a date or a string"},
		{`frame >= *`, 10, "a number, a date or a string"},
		{`and camera_id:x`, 1, "the keyword and where a field name"},
		{`camera_id:x or or y:1`, 16, "the keyword or where a field name"},
		{`"camera_id":x`, 1, "a field name was expected"},
		{`cam*:x`, 1, "a field name was expected"},
		{`came$ra:x`, 5, "may hold only letters"},
		{`a..b:x`, 1, "empty part between dots"},
		{`labels:{ label:person`, 22, "closing brace for the one at character 8"},
		{`labels:{ }`, 10, `"}" where a field name`},
		{`x:(a or)`, 8, `")" where a value`},
		{`x:1 y:2`, 5, `"y" where and, or`},
		{strings.Repeat("(", MaxDepth+1) + "x:1" + strings.Repeat(")", MaxDepth+1), MaxDepth + 1, "nested deeper than"},
		{strings.Repeat("x:1 or ", MaxClauses) + "x:1", 7*MaxClauses + 3, "more than 200 conditions"},
		{strings.Repeat("x", MaxLength+1), MaxLength + 1, "longer than 2000 characters"},
		{"x:\xff", 1, "not valid UTF-8"},
		// Conditions that cannot hold for their field's type, which
		// Elasticsearch would fail the whole search on.
		{`frame >= ten`, 10, `frame is a long: "ten" is not a number`},
		{`frame:1*`, 7, "a trailing * needs a field of words: frame is a long"},
		{`@timestamp < yesterday`, 14, "@timestamp is a date"},
		{`online >= maybe`, 11, "online is a boolean"},
		{`addr > 10.0.0`, 8, "not an IP address"},
		{`where > 3`, 1, "where is a geo_point: comparisons work on"},
		{`labels:person`, 1, "labels holds objects"},
		{`labels >= 3`, 1, "labels holds objects"},
		{`camera_id:{ x:1 }`, 1, "camera_id is a keyword, not objects"},
		{`labels:{ confidence >= high }`, 24, `labels.confidence is a float: "high"`},
	}
	for _, tt := range tests {
		q, _, err := build(tt.q)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("Parse(%.40q) = %v, %v; want an error at character %d", tt.q, q, err, tt.pos)
			continue
		}
		if e.Pos != tt.pos || !strings.Contains(e.Msg, tt.says) {
			t.Errorf("Parse(%.40q): %v; want character %d and %q", tt.q, err, tt.pos, tt.says)
		}
	}
}

// FuzzParse checks that no q panics, and that every q read builds a query that
// encodes.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`a:1`, `labels:{ l:p and c >= 0.8 }`, `x:(a or not "b c") and y:*`, `((`, `x:"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		out, _, err := build(q)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Pos < 1 {
				t.Fatalf("Parse(%q): %v is not an Error with a position", q, err)
			}
			return
		}
		if _, err := json.Marshal(out); err != nil {
			t.Fatalf("Parse(%q) built a query that does not encode: %v", q, err)
		}
	})
}

// Fields the mapping lacks match nothing, and are named so that a client can say
// so; so are the objects a condition reaches into.
func TestUnknownFieldsAreNamed(t *testing.T) {
	e, err := Parse(`camra_id:cam-07 or labels:{ lable:person } or frame > 3 or x.y.z:*`)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.Fields(), []string{"camra_id", "labels", "labels.lable", "frame", "x", "x.y", "x.y.z"}; !slices.Equal(got, want) {
		t.Errorf("Fields() = %q, want %q", got, want)
	}
	_, notes, err := e.Query(demo, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"camra_id", "labels.lable", "x.y.z"}; !slices.Equal(notes.Unknown, want) {
		t.Errorf("Unknown = %q, want %q", notes.Unknown, want)
	}
}

// A follow keeps the query it started with, maybe before any document mapped
// the fields q names. Whether the first ones map an array of objects as nested
// (as the template does ES_NESTED_FIELDS) or as plain objects, the query must
// then select what it would had they been mapped first: so a path no index maps
// is asked both ways, each of which matches nothing where it is mapped the
// other way.
func TestConditionsOnObjectsNoIndexMapsYetHoldHoweverTheyAreMapped(t *testing.T) {
	person := `{"match":{"labels.label":{"lenient":true,"query":"person"}}}`
	either := func(inner string) string {
		return `{"bool":{"minimum_should_match":1,"should":[{"nested":{"ignore_unmapped":true,"path":"labels","query":` + inner + `}},` +
			`{"bool":{"filter":[{"exists":{"field":"labels"}},` + inner + `]}}]}}`
	}
	tests := []struct{ q, want string }{
		{`labels.label:person`, either(person)},
		{`labels:{ label:person }`, either(person)},
		// Not "every document without a person label" where labels is nested.
		{`labels:{ not label:person }`, either(`{"bool":{"must_not":[` + person + `]}}`)},
		{`labels:*`, `{"bool":{"minimum_should_match":1,"should":[` +
			`{"nested":{"ignore_unmapped":true,"path":"labels","query":{"match_all":{}}}},{"exists":{"field":"labels"}}]}}`},
		// A field at the top is no element of anything: as it was.
		{`camera_id:cam-01`, `{"match":{"camera_id":{"lenient":true,"query":"cam-01"}}}`},
	}
	for _, tt := range tests {
		e, err := Parse(tt.q)
		if err != nil {
			t.Fatal(err)
		}
		q, notes, err := e.Query(Caps{}, time.UTC)
		if err != nil {
			t.Errorf("Query(%q): %v", tt.q, err)
			continue
		}
		if len(notes.Unknown) == 0 {
			t.Errorf("Query(%q) names no unknown field", tt.q)
		}
		if got, _ := json.Marshal(q); string(got) != tt.want {
			t.Errorf("Query(%q) =\n%s\nwant\n%s", tt.q, got, tt.want)
		}
	}
}

// An array of objects mapped as nested in new indices and as plain objects in
// older ones: each index gets the query it can answer, and the answer says
// where conditions in braces are not held to one element. The nested query is
// not held to the indices that map the path as nested so far: the indices a
// follow meets after it began (the next day's) are nested too.
func TestNestedPathsMappedTwoWaysAnswerOnEachIndex(t *testing.T) {
	caps := Caps{"labels": {"nested": {"a-2026.12.06"}, "object": {"a-2026.12.01"}}, "labels.label": {"keyword": nil}}
	e, err := Parse(`labels:{ label:person }`)
	if err != nil {
		t.Fatal(err)
	}
	q, notes, err := e.Query(caps, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	inner := `{"match":{"labels.label":{"lenient":true,"query":"person"}}}`
	want := `{"bool":{"minimum_should_match":1,"should":[` +
		`{"nested":{"ignore_unmapped":true,"path":"labels","query":` + inner + `}},` +
		`{"bool":{"filter":[{"terms":{"_index":["a-2026.12.01"]}},` + inner + `]}}]}}`
	if got, _ := json.Marshal(q); string(got) != want {
		t.Errorf("query =\n%s\nwant\n%s", got, want)
	}
	if len(notes.Warnings) != 1 || !strings.Contains(notes.Warnings[0], "not mapped as nested in 1 older indices") {
		t.Errorf("warnings = %q", notes.Warnings)
	}
}
