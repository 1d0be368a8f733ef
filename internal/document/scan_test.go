package document

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTopLevelSeesOnlyTheOutermostMembers(t *testing.T) {
	tests := []struct {
		in   string
		want []string // key=value, in order
	}{
		{`{}`, nil},
		{` { } `, nil},
		{`{"a":1}`, []string{"a=1"}},
		{`{"a" : 1 , "b":"x"}`, []string{"a=1", `b="x"`}},
		{`{"nested":{"timestamp":"no","x":[1,{"y":"}"}]},"timestamp":"yes"}`,
			[]string{`nested={"timestamp":"no","x":[1,{"y":"}"}]}`, `timestamp="yes"`}},
		{`{"s":"a \"quoted\" }, brace","n":-1.5e3,"t":true,"f":false,"z":null}`,
			[]string{`s="a \"quoted\" }, brace"`, "n=-1.5e3", "t=true", "f=false", "z=null"}},
		{`{"esc\u0061ped":1,"back\\slash":2}`, []string{"escaped=1", `back\slash=2`}},
		{"{\n\t\"a\"\n:\n[ 1 , 2 ]\n}", []string{"a=[ 1 , 2 ]"}},
	}
	for _, tt := range tests {
		var got []string
		ok := topLevel([]byte(tt.in), func(k, v []byte, _, _ int) {
			got = append(got, string(k)+"="+string(v))
		})
		if !ok || !slices.Equal(got, tt.want) {
			t.Errorf("topLevel(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzTopLevel checks the scanner against encoding/json: for every valid object,
// the same members with the same values, in the same order.
func FuzzTopLevel(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":[{"c":"}"}]}`, `{"k\"":"v\\"}`, `{"a":{"b":{"c":[]}}, "d" : null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		in = []byte(strings.Trim(string(in), " \t\r\n"))
		// Build rejects invalid UTF-8 before scanning (encoding/json would read it as
		// U+FFFD where the scanner keeps the bytes).
		if !json.Valid(in) || !utf8.Valid(in) || len(in) == 0 || in[0] != '{' {
			return
		}
		var want []string
		dec := json.NewDecoder(bytes.NewReader(in))
		dec.Token() // {
		for dec.More() {
			k, _ := dec.Token()
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			want = append(want, k.(string)+"="+compact(t, v))
		}
		var got []string
		ok := topLevel(in, func(k, v []byte, _, _ int) {
			got = append(got, string(k)+"="+compact(t, v))
		})
		if !ok || !slices.Equal(got, want) {
			t.Fatalf("topLevel(%q) = %q, want %q", in, got, want)
		}
	})
}

func compact(t *testing.T, v []byte) string {
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		t.Fatalf("value %q: %v", v, err)
	}
	return b.String()
}
