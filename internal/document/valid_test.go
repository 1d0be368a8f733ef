package document

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestValidAgreesWithEncodingJSON(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, s := range []string{
		``, ` `, `{}`, `[]`, `""`, `0`, `-0`, `-`, `01`, `1.`, `1.5`, `1e`, `1e+`, `1E-7`, `-12.5e10`, `.5`, `+1`,
		`true`, `tru`, `false`, `null`, `nul`, `nullx`, `{"a":1}`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{,}`, `{"a":1 "b":2}`,
		`[1,]`, `[,1]`, `[1 2]`, ` [ 1 , { "a" : [ ] } ] `, "\t{\r\n}\n", `{"a":1}}`, `{"a":1} x`, `1 2`,
		`"\u00e9"`, `"\u00g9"`, `"\u00e"`, `"\x"`, `"\/\b\f\n\r\t\"\\"`, "\"a\tb\"", "\"a\x01\"", "\"\xff\"", `"abc`, `"\`,
		`{"a":"}"}`, `{"k\"":"v\\"}`, deep(maxDepth), deep(maxDepth + 1), `{"a":` + deep(maxDepth-1) + `}`, `{"a":` + deep(maxDepth) + `}`,
	} {
		if got, want := valid([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Errorf("valid(%.60q) = %t, json.Valid says %t", s, got, want)
		}
	}
}

func FuzzValid(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,-2.5e3,"x\u0041",true,null,{}]}`, `[`, `"\ud800"`, `-01`, `1e5`, ` { "a" : 1 } `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if got, want := valid(in), json.Valid(in); got != want {
			t.Fatalf("valid(%q) = %t, json.Valid says %t", in, got, want)
		}
	})
}

func BenchmarkValid(b *testing.B) {
	raw := []byte(`{"camera_id":"cam-01","frame":1,"timestamp":"2023-03-09T19:40:00.000Z","width":1920,"height":1080,"site":"depot-north","model":"yolov8n","inference_ms":12.3,"labels":[{"label":"person","confidence":0.93,"box":[12,40,96,210],"track_id":17},{"label":"car","confidence":0.71,"box":[300,120,520,260],"track_id":18}]}`)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		valid(raw)
	}
}

func BenchmarkValidEncodingJSON(b *testing.B) {
	raw := []byte(`{"camera_id":"cam-01","frame":1,"timestamp":"2023-03-09T19:40:00.000Z","width":1920,"height":1080,"site":"depot-north","model":"yolov8n","inference_ms":12.3,"labels":[{"label":"person","confidence":0.93,"box":[12,40,96,210],"track_id":17},{"label":"car","confidence":0.71,"box":[300,120,520,260],"track_id":18}]}`)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		json.Valid(raw)
	}
}
