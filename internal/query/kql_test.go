package query

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestEachConstructBuildsItsQuery(t *testing.T) {
	tests := []struct{ q, want string }{
		{``, `null`},
		{`   `, `null`},
		{`camera_id:cam-07`, `{"match":{"camera_id":{"lenient":true,"query":"cam-07"}}}`},
		{`frame:42`, `{"match":{"frame":{"lenient":true,"query":"42"}}}`},
		{`model:"yolo v8"`, `{"match_phrase":{"model":{"query":"yolo v8"}}}`},
		{`note:"say \"hi\""`, `{"match_phrase":{"note":{"query":"say \"hi\""}}}`},
		{`camera_id:cam-*`, `{"prefix":{"camera_id":{"value":"cam-"}}}`},
		{`camera_id:cam\*7`, `{"match":{"camera_id":{"lenient":true,"query":"cam*7"}}}`},
		{`labels:*`, `{"exists":{"field":"labels"}}`},
		{`frame >= 10`, `{"range":{"frame":{"gte":"10"}}}`},
		{`frame>10`, `{"range":{"frame":{"gt":"10"}}}`},
		{`@timestamp < "2023-03-09T19:45:00Z"`, `{"range":{"@timestamp":{"lt":"2023-03-09T19:45:00Z"}}}`},
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
		{`meta.fw:"1.2"`, `{"match_phrase":{"meta.fw":{"query":"1.2"}}}`},
	}
	for _, tt := range tests {
		q, err := Parse(tt.q)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.q, err)
			continue
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
	}
	for _, tt := range tests {
		q, err := Parse(tt.q)
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
		out, err := Parse(q)
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
