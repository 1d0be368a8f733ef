package document

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// built is the document Build makes of raw.
func built(t testing.TB, raw string) []byte {
	t.Helper()
	doc, err := Build([]byte(raw), testSource(), Options{TimestampField: "timestamp"})
	if err != nil {
		t.Fatalf("Build(%s): %v", raw, err)
	}
	return doc.Body
}

// sameJSON reports whether a and b are the same JSON value, whatever the order of
// their members.
func sameJSON(t testing.TB, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("not JSON: %v: %s", err, a)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return reflect.DeepEqual(va, vb)
}

// heldOf decodes the AsideKey member of body.
func heldOf(t *testing.T, body []byte) (aside, map[string]json.RawMessage) {
	t.Helper()
	m := decodeObject(t, body)
	var held aside
	if err := json.Unmarshal(m[AsideKey], &held); err != nil {
		t.Fatalf("%s of %s: %v", AsideKey, body, err)
	}
	return held, m
}

func TestSetAsideMovesOnlyTheMemberTheRefusalNames(t *testing.T) {
	body := built(t, `{"camera":"cam-1","labels":{"person":0.9},"count":3}`)
	got, ok := SetAside(body, "[1:12] failed to parse field [labels.person] of type [keyword] in document with id 'x'. Preview of field's value: '{a=1}'")
	if !ok {
		t.Fatal("SetAside reported nothing to set aside")
	}
	held, m := heldOf(t, got)
	if want := []string{"labels"}; !reflect.DeepEqual(held.Fields, want) {
		t.Errorf("fields set aside = %q, want %q", held.Fields, want)
	}
	if !sameJSON(t, []byte(held.Source), []byte(`{"labels":{"person":0.9}}`)) {
		t.Errorf("source set aside = %s", held.Source)
	}
	if _, still := m["labels"]; still {
		t.Errorf("labels is still a top-level member: %s", got)
	}
	for _, k := range []string{"camera", "count", TimestampKey, OriginKey} {
		if _, kept := m[k]; !kept {
			t.Errorf("%s was moved or lost: %s", k, got)
		}
	}
}

func TestSetAsideFindsTheFieldInEachFormOfRefusal(t *testing.T) {
	tests := []struct{ message, refusal, want string }{
		{`{"a":{"x":1},"other":4}`, "[1:12] failed to parse field [a] of type [long] in document with id 'x'. Preview of field's value: '{x=1}'", "a"},
		{`{"a":1,"other":4}`, "[1:6] object mapping for [a] tried to parse field [a] as object, but found a concrete value", "a"},
		{`{"a":[1,{"x":1}],"other":4}`, "mapper [a] cannot be changed from type [long] to [ObjectMapper]", "a"},
		{`{"a":{"a":{"a":{"a":1}}},"other":4}`, "[1:101] failed to parse: Limit of mapping depth [20] has been exceeded due to object field [a.a.a.a]", "a"},
		{`{"_id":1,"other":4}`, "[1:8] Field [_id] is a metadata field and cannot be added inside a document. Use the index API request parameters.", "_id"},
		// Elasticsearch reads the member "a.b" as a field b inside a field a.
		{`{"a.b":{"c":1},"other":4}`, "[1:14] failed to parse field [a] of type [long] in document with id 'x'", "a.b"},
	}
	for _, tt := range tests {
		got, ok := SetAside(built(t, tt.message), tt.refusal)
		if !ok {
			t.Fatalf("%q: nothing set aside", tt.refusal)
		}
		held, _ := heldOf(t, got)
		if len(held.Fields) != 1 || held.Fields[0] != tt.want {
			t.Errorf("%q: set aside %q, want [%s]", tt.refusal, held.Fields, tt.want)
		}
	}
}

func TestSetAsideMovesEveryMemberWhenTheRefusalNamesNone(t *testing.T) {
	body := built(t, `{"a":1,"b":[1,{"c":2}],"@timestamp":"2024-05-06T07:08:09Z","timestamp":"soon"}`)
	got, ok := SetAside(body, "[1:2] failed to parse")
	if !ok {
		t.Fatal("SetAside reported nothing to set aside")
	}
	held, m := heldOf(t, got)
	if want := []string{"a", "b", "timestamp"}; !reflect.DeepEqual(held.Fields, want) {
		t.Errorf("fields set aside = %q, want %q", held.Fields, want)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	if len(m) != 3 {
		t.Errorf("top-level members left = %q, want only %s, %s and %s", keys, TimestampKey, OriginKey, AsideKey)
	}
}

func TestSetAsideMovesOnlyTheMembersWithNamesNoIndexTakes(t *testing.T) {
	tests := []struct{ message, refusal, want string }{
		{`{"row":1,"":2}`, "[1:2] failed to parse: field name cannot be an empty string", ""},
		{`{"row":1,"a":{"b":[{"..":1}]}}`, "[1:22] failed to parse: field name cannot contain only dots", "a"},
		{`{"row":1,".a":2}`, "[1:2] failed to parse: field name cannot contain only whitespace: ['.a']", ".a"},
		{`{"row":1,"a..b":2}`, "[1:2] failed to parse: field name cannot contain only whitespace: ['a..b']", "a..b"},
		{`{"row":1,"x":{"  ":2}}`, "[1:2] Field name cannot contain only whitespace: [  ]", "x"},
	}
	for _, tt := range tests {
		got, ok := SetAside(built(t, tt.message), tt.refusal)
		if !ok {
			t.Fatalf("%s: nothing set aside", tt.message)
		}
		held, m := heldOf(t, got)
		if len(held.Fields) != 1 || held.Fields[0] != tt.want {
			t.Errorf("%s: set aside %q, want [%s]", tt.message, held.Fields, tt.want)
		}
		if _, ok := m["row"]; !ok {
			t.Errorf("%s: row was set aside too", tt.message)
		}
	}
}

func TestSetAsideAddsToWhatWasSetAsideBefore(t *testing.T) {
	body := built(t, `{"a":{"x":1},"b":"text","c":true}`)
	once, _ := SetAside(body, "failed to parse field [a] of type [long]")
	twice, ok := SetAside(once, "object mapping for [b] tried to parse field [b] as object, but found a concrete value")
	if !ok {
		t.Fatal("second SetAside reported nothing to set aside")
	}
	held, _ := heldOf(t, twice)
	if want := []string{"a", "b"}; !reflect.DeepEqual(held.Fields, want) {
		t.Errorf("fields set aside = %q, want %q", held.Fields, want)
	}
	if !sameJSON(t, Restore(twice, nil), body) {
		t.Errorf("restored %s, want %s", Restore(twice, nil), body)
	}
	// A refusal of a member already set aside cannot be about it: every other
	// member goes too.
	all, ok := SetAside(twice, "failed to parse field [a] of type [long]")
	if held, _ := heldOf(t, all); !ok || !reflect.DeepEqual(held.Fields, []string{"a", "b", "c"}) {
		t.Errorf("third SetAside: ok %t, fields %q, want [a b c]", ok, held.Fields)
	}
	if _, ok := SetAside(all, "failed to parse field [c] of type [long]"); ok {
		t.Error("SetAside of a document with nothing of the message's own left reported success")
	}
}

func TestRestoreGivesBackTheDocumentAsPublished(t *testing.T) {
	body := built(t, `{"z":"last","a":{"deep":[1,"two",{"three":3.0e0}]},"esc":"quote \" and \u00e9","n":-0}`)
	aside, _ := SetAside(body, "no field named")
	got := Restore(aside, nil)
	if !sameJSON(t, got, body) {
		t.Errorf("Restore = %s\nwant %s", got, body)
	}
	// The values come back as the bytes the producer sent, not re-encoded.
	for _, raw := range []string{`3.0e0`, `"quote \" and \u00e9"`, `-0`} {
		if !bytes.Contains(got, []byte(raw)) {
			t.Errorf("Restore lost the producer's bytes %s: %s", raw, got)
		}
	}
}

func TestRestoreLeavesOtherDocumentsAlone(t *testing.T) {
	for _, doc := range []string{
		`{"a":1}`,
		`{"note":"@unindexed"}`,
		`{"note":{"@unindexed":{"fields":["x"],"source":"{\"x\":1}"}}}`,
	} {
		if got := Restore([]byte(doc), nil); string(got) != doc {
			t.Errorf("Restore(%s) = %s", doc, got)
		}
	}
}

func TestRestoreKeepsOnlyTheMembersAskedFor(t *testing.T) {
	body := built(t, `{"camera":"c1","labels":[{"l":"p"}],"meta":{"fw":"1.2"},"score":1}`)
	aside, _ := SetAside(body, "no field named")
	tests := []struct {
		fields []string
		want   []string // members of the message expected back
	}{
		{[]string{"camera"}, []string{"camera"}},
		{[]string{"labels.l", "score"}, []string{"labels", "score"}},
		{[]string{"m*"}, []string{"meta"}},
		{[]string{"@timestamp"}, nil},
	}
	for _, tt := range tests {
		m := decodeObject(t, Restore(aside, tt.fields))
		var got []string
		for _, k := range []string{"camera", "labels", "meta", "score"} {
			if _, ok := m[k]; ok {
				got = append(got, k)
			}
		}
		if _, ok := m[AsideKey]; ok {
			t.Errorf("fields %q: %s is served", tt.fields, AsideKey)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("fields %q: members back %q, want %q", tt.fields, got, tt.want)
		}
	}
}

func TestAMessageMayNotCarryTheSetAsideField(t *testing.T) {
	_, err := Build([]byte(`{"`+AsideKey+`":{"fields":[]}}`), testSource(), Options{TimestampField: "timestamp"})
	if err == nil || !strings.Contains(err.Error(), AsideKey) {
		t.Errorf("Build of a message with %s: %v, want a reserved_field refusal naming it", AsideKey, err)
	}
}

// FuzzSetAside checks that whatever a message holds and whatever the refusal
// says, setting members aside keeps the document valid, keeps the pipeline's own
// fields, and restores to exactly the document Build made.
func FuzzSetAside(f *testing.F) {
	f.Add([]byte(`{"a":{"b":1},"c":[1,"x"]}`), "failed to parse field [a.b] of type [long]")
	f.Add([]byte(`{"a.b":1,"":2}`), "object mapping for [a] tried to parse field [a] as object")
	f.Add([]byte(`{"x":"\u0022"}`), "")
	f.Fuzz(func(t *testing.T, raw []byte, refusal string) {
		doc, err := Build(raw, testSource(), Options{TimestampField: "timestamp"})
		if err != nil {
			return
		}
		got, ok := SetAside(doc.Body, refusal)
		if !ok {
			return
		}
		if !json.Valid(got) {
			t.Fatalf("SetAside made invalid JSON: %s", got)
		}
		m := decodeObject(t, got)
		for _, k := range []string{TimestampKey, OriginKey, AsideKey} {
			if _, ok := m[k]; !ok {
				t.Fatalf("SetAside lost %s: %s", k, got)
			}
		}
		if back := Restore(got, nil); !sameJSON(t, back, doc.Body) {
			t.Fatalf("Restore(SetAside(%s)) = %s", doc.Body, back)
		}
	})
}
