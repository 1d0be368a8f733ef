package document

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// published is the JetStream publish time used by every test source.
var published = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

// publishedMillis is published as a document stores it: to the millisecond.
var publishedMillis = published.Truncate(time.Millisecond)

func testSource() Source {
	return Source{Subject: "annotations.camera1", Stream: "ANNOTATIONS", Sequence: 42, Published: published}
}

func mustParse(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// decodeObject decodes b as a JSON object, keeping each value's raw bytes.
func decodeObject(t *testing.T, b []byte) map[string]json.RawMessage {
	t.Helper()
	if !json.Valid(b) {
		t.Fatalf("not valid JSON: %s", b)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %v: %s", err, b)
	}
	return m
}

type natsRecord struct {
	Subject   string `json:"subject"`
	Stream    string `json:"stream"`
	Seq       uint64 `json:"seq"`
	Published string `json:"published"`
}

// checkNATS asserts the "@nats" record describes src.
func checkNATS(t *testing.T, body map[string]json.RawMessage, src Source) {
	t.Helper()
	raw, ok := body["@nats"]
	if !ok {
		t.Fatalf("body has no @nats record")
	}
	var got natsRecord
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("@nats %s: %v", raw, err)
	}
	want := natsRecord{
		Subject:   src.Subject,
		Stream:    src.Stream,
		Seq:       src.Sequence,
		Published: src.Published.UTC().Format(time.RFC3339Nano),
	}
	if got != want {
		t.Errorf("@nats = %+v, want %+v", got, want)
	}
}

// checkTimestamp asserts "@timestamp" is an RFC 3339 string in UTC equal to want.
func checkTimestamp(t *testing.T, body map[string]json.RawMessage, want time.Time) {
	t.Helper()
	raw, ok := body[TimestampKey]
	if !ok {
		t.Fatalf("body has no %s", TimestampKey)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("%s = %s, want a string: %v", TimestampKey, raw, err)
	}
	if !strings.HasSuffix(s, "Z") {
		t.Errorf("%s = %q, want UTC (a trailing Z)", TimestampKey, s)
	}
	got, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("%s = %q is not RFC 3339: %v", TimestampKey, s, err)
	}
	if !got.Equal(want) {
		t.Errorf("%s = %s, want %s", TimestampKey, got, want)
	}
}

func TestIDPrefersNatsMsgIDOverStreamPosition(t *testing.T) {
	tests := []struct {
		name string
		src  Source
		want string
	}{
		{"publisher gave a Nats-Msg-Id", Source{Stream: "ANNOTATIONS", Sequence: 7, MsgID: "cam1-0001"}, "cam1-0001"},
		{"no Nats-Msg-Id: stream position", Source{Stream: "ANNOTATIONS", Sequence: 7}, "ANNOTATIONS-7"},
		{"no Nats-Msg-Id, large sequence", Source{Stream: "S", Sequence: 18446744073709551615}, "S-18446744073709551615"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ID(tt.src); got != tt.want {
				t.Errorf("ID(%+v) = %q, want %q", tt.src, got, tt.want)
			}
		})
	}
}

func TestBuildSplicesTimestampAndOriginIntoTheOriginalBytes(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		zone *time.Location // nil means UTC
		want string         // expected @timestamp, RFC 3339
	}{
		{"string without zone is read as UTC by default",
			`{"timestamp":"2023-03-09T19:40:00","label":"cat"}`, nil, "2023-03-09T19:40:00Z"},
		{"string with an offset",
			`{"timestamp":"2023-03-09T19:40:00+01:00","label":"cat"}`, nil, "2023-03-09T18:40:00Z"},
		{"string without zone in the default zone Europe/Berlin",
			`{"timestamp":"2023-07-09T19:40:00","label":"cat"}`, berlin(t), "2023-07-09T17:40:00Z"},
		{"epoch seconds",
			`{"timestamp":1678390800,"label":"cat"}`, nil, "2023-03-09T19:40:00Z"},
		{"epoch milliseconds",
			`{"timestamp":1678390800123,"label":"cat"}`, nil, "2023-03-09T19:40:00.123Z"},
		{"fractional seconds",
			`{"timestamp":"2023-03-09T19:40:00.123456Z","label":"cat"}`, nil, "2023-03-09T19:40:00.123Z"}, // the millisecond Elasticsearch keeps
		{"fractional epoch seconds",
			`{"timestamp":1678390800.25}`, nil, "2023-03-09T19:40:00.25Z"},
		{"epoch seconds as a string",
			`{"timestamp":"1678390800","label":"cat"}`, nil, "2023-03-09T19:40:00Z"},
		{"epoch milliseconds as a string",
			`{"timestamp":"1678390800123","label":"cat"}`, nil, "2023-03-09T19:40:00.123Z"},
		{"a date before 1970",
			`{"timestamp":"1969-07-20T20:17:40Z"}`, nil, "1969-07-20T20:17:40Z"},
		{"the same date as a negative epoch",
			`{"timestamp":-14182940}`, nil, "1969-07-20T20:17:40Z"},
		{"the same date as a negative epoch in a string",
			`{"timestamp":"-14182940"}`, nil, "1969-07-20T20:17:40Z"},
		{"nested values and odd spacing are kept as written",
			`{"timestamp" : "2023-03-09T19:40:00Z" ,"box":{"x": 1.50, "y":[1, 2e3]},"s":"\u00e9\n"}`, nil, "2023-03-09T19:40:00Z"},
		{"empty object gets no leading comma",
			`{}`, nil, publishedMillis.Format(time.RFC3339Nano)},
		{"empty object with inner whitespace",
			"{ \n }", nil, publishedMillis.Format(time.RFC3339Nano)},
		{"whitespace around the object",
			" \t\r\n{\"timestamp\":\"2023-03-09T19:40:00Z\",\"label\":\"cat\"}\n\n ", nil, "2023-03-09T19:40:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			zone := tt.zone
			if zone == nil {
				zone = time.UTC
			}
			src := testSource()
			doc, err := Build([]byte(tt.raw), src, Options{TimestampField: "timestamp", DefaultZone: zone})
			if err != nil {
				t.Fatalf("Build(%s): %v", tt.raw, err)
			}
			body := decodeObject(t, doc.Body)
			orig := decodeObject(t, []byte(tt.raw))
			for k, v := range orig {
				if !bytes.Equal(body[k], v) {
					t.Errorf("field %q = %s, want it unchanged: %s", k, body[k], v)
				}
			}
			if len(body) != len(orig)+2 {
				t.Errorf("body has %d keys, want the %d original ones plus @timestamp and @nats: %s", len(body), len(orig), doc.Body)
			}
			want := mustParse(t, tt.want)
			checkTimestamp(t, body, want)
			checkNATS(t, body, src)
			if !doc.Timestamp.Equal(want) {
				t.Errorf("Document.Timestamp = %s, want %s", doc.Timestamp, want)
			}
			if doc.ID != ID(src) {
				t.Errorf("Document.ID = %q, want %q", doc.ID, ID(src))
			}
		})
	}
}

func TestBuildStoresTheMessagesOwnTimestampInCanonicalForm(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		want     string
		original string // the producer's @timestamp, kept aside when rewritten; "" if left in place
	}{
		{"own @timestamp already canonical", `{"@timestamp":"2023-03-09T19:40:00Z","label":"cat"}`, "2023-03-09T19:40:00Z", ""},
		{"own @timestamp with an offset", `{"@timestamp":"2023-03-09T19:40:00+01:00","label":"cat"}`, "2023-03-09T18:40:00Z", `"2023-03-09T19:40:00+01:00"`},
		{"own @timestamp wins over the configured field",
			`{"timestamp":"2001-01-01T00:00:00Z","@timestamp":"2023-03-09T19:40:00Z"}`, "2023-03-09T19:40:00Z", ""},
		{"own @timestamp as epoch millis", `{"@timestamp":1678390800123}`, "2023-03-09T19:40:00.123Z", `1678390800123`},
		{"own @timestamp as epoch seconds", `{"@timestamp":1678442419,"label":"cat"}`, "2023-03-10T10:00:19Z", `1678442419`},
		{"own @timestamp with microseconds", `{"label":"cat","@timestamp":"2023-03-09T19:40:00.123456Z"}`, "2023-03-09T19:40:00.123Z", `"2023-03-09T19:40:00.123456Z"`},
		{"own @timestamp null, the configured field read instead",
			`{"timestamp":"2023-03-10T10:00:18Z","@timestamp":null}`, "2023-03-10T10:00:18Z", `null`},
		{"own @timestamp unreadable, the configured field read instead",
			`{"@timestamp":"yesterday","timestamp":1678442418}`, "2023-03-10T10:00:18Z", `"yesterday"`},
		{"own @timestamp repeated", `{"@timestamp":1,"@timestamp":"2023-03-09T19:40:00Z"}`, "2023-03-09T19:40:00Z", `"2023-03-09T19:40:00Z"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := testSource()
			doc, err := Build([]byte(tt.raw), src, Options{TimestampField: "timestamp", DefaultZone: time.UTC})
			if err != nil {
				t.Fatalf("Build(%s): %v", tt.raw, err)
			}
			if n := bytes.Count(doc.Body, []byte(`"@timestamp"`)); n != 1 {
				t.Errorf(`body has %d "@timestamp" keys, want exactly 1: %s`, n, doc.Body)
			}
			body := decodeObject(t, doc.Body)
			if got := string(body[TimestampKey]); got != `"`+tt.want+`"` {
				t.Errorf("@timestamp = %s, want %q", got, tt.want)
			}
			if got := string(body[OriginalTimestampKey]); got != tt.original {
				t.Errorf("%s = %q, want %q", OriginalTimestampKey, got, tt.original)
			}
			orig := decodeObject(t, []byte(tt.raw))
			for k, v := range orig {
				if k != TimestampKey && !bytes.Equal(body[k], v) {
					t.Errorf("field %q = %s, want it unchanged: %s", k, body[k], v)
				}
			}
			checkNATS(t, body, src)
			if want := mustParse(t, tt.want); !doc.Timestamp.Equal(want) || doc.Fallback != "" {
				t.Errorf("Document.Timestamp = %s (fallback %q), want %s", doc.Timestamp, doc.Fallback, want)
			}
		})
	}
}

func TestZonelessTimestampsReadTheSameInEitherField(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{TimestampField: "timestamp", DefaultZone: ny}
	own, err := Build([]byte(`{"@timestamp":"2023-03-14T22:00:00"}`), testSource(), opts)
	if err != nil {
		t.Fatal(err)
	}
	named, err := Build([]byte(`{"timestamp":"2023-03-14T22:00:00"}`), testSource(), opts)
	if err != nil {
		t.Fatal(err)
	}
	want := `"2023-03-15T02:00:00Z"`
	for name, doc := range map[string]Document{"@timestamp": own, "timestamp": named} {
		if got := string(decodeObject(t, doc.Body)[TimestampKey]); got != want {
			t.Errorf("zoneless %s in America/New_York: stored @timestamp %s, want %s", name, got, want)
		}
	}
}

func TestBuildFallsBackToThePublishTime(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		problem TimestampProblem
	}{
		{"no timestamp field", `{"label":"cat"}`, TimestampMissing},
		{"unparseable string", `{"timestamp":"yesterday"}`, TimestampNotADate},
		{"malformed offset", `{"timestamp":"2023-03-09T19:40:00+0100"}`, TimestampNotADate},
		{"empty string", `{"timestamp":""}`, TimestampNotADate},
		{"year 99999", `{"timestamp":"99999-01-01T00:00:00Z"}`, TimestampNotADate},
		{"offset hour 24", `{"timestamp":"2023-03-09T19:40:00+24:00"}`, TimestampNotADate},
		{"offset minute 60", `{"timestamp":"2023-03-09T19:40:00+21:60"}`, TimestampNotADate},
		{"epoch before the year 0000", `{"timestamp":-62167219201}`, TimestampOutOfRange},
		{"epoch string out of range", `{"timestamp":"100000000000000"}`, TimestampOutOfRange},
		{"exponent in a string", `{"timestamp":"1.6e9"}`, TimestampNotADate},
		{"huge negative epoch", `{"timestamp":-1e300}`, TimestampOutOfRange},
		{"epoch out of range", `{"timestamp":1e15}`, TimestampOutOfRange},
		{"boolean", `{"timestamp":true}`, TimestampNotADate},
		{"null", `{"timestamp":null}`, TimestampNull},
		{"object", `{"timestamp":{"s":1}}`, TimestampNotADate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := testSource()
			doc, err := Build([]byte(tt.raw), src, Options{TimestampField: "timestamp", DefaultZone: time.UTC})
			if err != nil {
				t.Fatalf("Build(%s): %v", tt.raw, err)
			}
			body := decodeObject(t, doc.Body)
			checkTimestamp(t, body, publishedMillis)
			checkNATS(t, body, src)
			if !doc.Timestamp.Equal(publishedMillis) || doc.Timestamp.Location() != time.UTC {
				t.Errorf("Document.Timestamp = %s, want the publish time %s in UTC", doc.Timestamp, publishedMillis)
			}
			if doc.Fallback != tt.problem {
				t.Errorf("Document.Fallback = %q, want %q", doc.Fallback, tt.problem)
			}
			orig := decodeObject(t, []byte(tt.raw))
			for k, v := range orig {
				if !bytes.Equal(body[k], v) {
					t.Errorf("field %q = %s, want it unchanged: %s", k, body[k], v)
				}
			}
		})
	}
}

func TestBuildHonoursTheTimestampFieldOption(t *testing.T) {
	raw := []byte(`{"timestamp":"2001-01-01T00:00:00Z","ts":"2023-03-09T19:40:00Z"}`)
	tests := []struct {
		field string
		want  time.Time
	}{
		{"ts", mustParse(t, "2023-03-09T19:40:00Z")},
		{"timestamp", mustParse(t, "2001-01-01T00:00:00Z")},
		{"missing", publishedMillis},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			doc, err := Build(raw, testSource(), Options{TimestampField: tt.field, DefaultZone: time.UTC})
			if err != nil {
				t.Fatal(err)
			}
			if !doc.Timestamp.Equal(tt.want) {
				t.Errorf("Document.Timestamp = %s, want %s", doc.Timestamp, tt.want)
			}
			checkTimestamp(t, decodeObject(t, doc.Body), tt.want)
		})
	}
}

func TestBuildRejectsWhatCanNeverBeIndexed(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want pipeline.Reason
	}{
		{"empty", ``, pipeline.ReasonInvalidJSON},
		{"whitespace only", " \n ", pipeline.ReasonInvalidJSON},
		{"truncated object", `{"a":1`, pipeline.ReasonInvalidJSON},
		{"trailing garbage", `{"a":1} x`, pipeline.ReasonInvalidJSON},
		{"two objects", `{}{}`, pipeline.ReasonInvalidJSON},
		{"single quotes", `{'a':1}`, pipeline.ReasonInvalidJSON},
		{"not JSON at all", `hello`, pipeline.ReasonInvalidJSON},
		{"array", `[{"a":1}]`, pipeline.ReasonNotObject},
		{"string", `"{}"`, pipeline.ReasonNotObject},
		{"number", `42`, pipeline.ReasonNotObject},
		{"null", `null`, pipeline.ReasonNotObject},
		{"boolean", `true`, pipeline.ReasonNotObject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := Build([]byte(tt.raw), testSource(), Options{TimestampField: "timestamp", DefaultZone: time.UTC})
			var rej *pipeline.RejectError
			if !errors.As(err, &rej) {
				t.Fatalf("Build(%q) = %s, %v; want a *RejectError", tt.raw, doc.Body, err)
			}
			if rej.Reason != tt.want {
				t.Errorf("Build(%q) reason = %q, want %q", tt.raw, rej.Reason, tt.want)
			}
			if !strings.HasPrefix(rej.Error(), string(tt.want)+": ") {
				t.Errorf("Error() = %q, want it to start with the reason", rej.Error())
			}
		})
	}
}

func FuzzBuild(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"a":1}`,
		`{"timestamp":"2023-03-09T19:40:00","label":"cat"}`,
		`{"@timestamp":1678390800123}`,
		` {"timestamp":1678390800.25} `,
		`[1,2]`,
		`null`,
		`{"a":`,
		`{"timestamp":"2023-03-10T10:00:18Z","@timestamp":null}`,
		`{ "a" : 1 , "@timestamp" : "2023-03-09T19:40:00+01:00" }`,
		`{"@timestamp":1,"b":[{"@timestamp":2}],"@timestamp":"x"}`,
	} {
		f.Add([]byte(s))
	}
	src := testSource()
	opts := Options{TimestampField: "timestamp", DefaultZone: time.UTC}
	f.Fuzz(func(t *testing.T, raw []byte) {
		doc, err := Build(raw, src, opts)
		if err != nil {
			var rej *pipeline.RejectError
			if !errors.As(err, &rej) {
				t.Fatalf("Build(%q) error %v is not a *RejectError", raw, err)
			}
			return
		}
		if !json.Valid(doc.Body) {
			t.Fatalf("Build(%q) body is not valid JSON: %q", raw, doc.Body)
		}
		if bytes.ContainsAny(doc.Body, "\r\n") {
			t.Fatalf("Build(%q) body spans lines, breaking a bulk request: %q", raw, doc.Body)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(doc.Body, &m); err != nil {
			t.Fatalf("Build(%q) body is not a JSON object: %v: %q", raw, err, doc.Body)
		}
		if _, ok := m["@nats"]; !ok {
			t.Fatalf("Build(%q) body has no @nats: %q", raw, doc.Body)
		}
		if got, want := string(m[TimestampKey]), `"`+doc.Timestamp.Format(time.RFC3339Nano)+`"`; got != want {
			t.Fatalf("Build(%q) stores @timestamp %s, not the instant that chose its index, %s", raw, got, want)
		}
	})
}

func TestBuildWritesTheOriginAsJSONStrings(t *testing.T) {
	tests := []struct {
		name    string
		subject string
	}{
		{"plain subject", "annotations.camera1"},
		{"quote and backslash", `annotations."cam"\1`},
		{"non-ASCII", "annotations.kamera-ä"},
		{"line separator U+2028", "annotations.a\u2028b"},
		{"control character", "annotations.a\x01b"},
		{"DEL", "annotations.a\x7fb"},
		{"invalid UTF-8", "annotations.a\xffb"},
		{"non-printable astral rune", "annotations.a\U000E0001b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := testSource()
			src.Subject = tt.subject
			doc, err := Build([]byte(`{"a":1}`), src, Options{TimestampField: "timestamp", DefaultZone: time.UTC})
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(doc.Body) {
				t.Fatalf("body is not valid JSON: %q", doc.Body)
			}
			// JSON can only carry valid UTF-8; an invalid byte becomes U+FFFD.
			src.Subject = strings.ToValidUTF8(tt.subject, "\uFFFD")
			checkNATS(t, decodeObject(t, doc.Body), src)
		})
	}
}

func TestBuildRejectsAMessageThatClaimsTheReservedOriginField(t *testing.T) {
	_, err := Build([]byte(`{"@nats":"mine","timestamp":"2023-03-09T19:40:00Z"}`), testSource(), Options{TimestampField: "timestamp", DefaultZone: time.UTC})
	var rej *pipeline.RejectError
	if !errors.As(err, &rej) || rej.Reason != pipeline.ReasonReserved {
		t.Fatalf("err = %v, want a %s rejection", err, pipeline.ReasonReserved)
	}
}

func TestBuildAcceptsOnlyJSONWhitespaceAroundTheObject(t *testing.T) {
	opts := Options{TimestampField: "timestamp", DefaultZone: time.UTC}
	if _, err := Build([]byte(" \t\r\n{}\n"), testSource(), opts); err != nil {
		t.Errorf("JSON whitespace around the object: %v", err)
	}
	var rej *pipeline.RejectError
	if _, err := Build([]byte("\u00a0{}"), testSource(), opts); !errors.As(err, &rej) || rej.Reason != pipeline.ReasonInvalidJSON {
		t.Errorf("no-break space before the object: err = %v, want %s", err, pipeline.ReasonInvalidJSON)
	}
}

func TestBuildRejectsAMessageWithoutUsableTimestampWhenRequired(t *testing.T) {
	opts := Options{TimestampField: "timestamp", DefaultZone: time.UTC, Required: true, MaxPast: 30 * day, MaxFuture: day}
	for _, tt := range []struct {
		raw  string
		want pipeline.Reason
	}{
		{`{"a":1}`, pipeline.ReasonNoTimestamp},
		{`{"timestamp":"yesterday"}`, pipeline.ReasonNoTimestamp},
		{`{"timestamp":null}`, pipeline.ReasonNoTimestamp},
		{`{"timestamp":"2024-04-06T07:08:09Z"}`, pipeline.ReasonTimestampOutOfRange},  // 30 days and a minute before publishing
		{`{"@timestamp":"2024-05-07T07:09:10Z"}`, pipeline.ReasonTimestampOutOfRange}, // a day and a minute after
		{`{"timestamp":"9999-12-31T23:30:00-01:00"}`, pipeline.ReasonTimestampOutOfRange},
		{`{"timestamp":"1"}`, pipeline.ReasonTimestampOutOfRange},
	} {
		_, err := Build([]byte(tt.raw), testSource(), opts)
		var rej *pipeline.RejectError
		if !errors.As(err, &rej) || rej.Reason != tt.want {
			t.Errorf("Build(%s) err = %v, want a %s rejection", tt.raw, err, tt.want)
		}
	}
	if _, err := Build([]byte(`{"timestamp":"2024-05-06T07:00:00Z"}`), testSource(), opts); err != nil {
		t.Errorf("a message with a timestamp: %v", err)
	}
}

func TestBuildPutsAPrettyPrintedMessageOnOneLine(t *testing.T) {
	raw := "{\r\n  \"timestamp\": \"2023-03-09T19:40:00Z\",\n  \"labels\": [\n    {\"label\": \"a b\"}\n  ]\n}\n"
	doc, err := Build([]byte(raw), testSource(), Options{TimestampField: "timestamp", DefaultZone: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsAny(doc.Body, "\r\n") {
		t.Fatalf("body spans several lines, which breaks a bulk request: %q", doc.Body)
	}
	if !json.Valid(doc.Body) || !bytes.Contains(doc.Body, []byte(`"labels":[{"label":"a b"}]`)) {
		t.Errorf("body = %s", doc.Body)
	}
}

func TestBuildRejectsAMsgIDElasticsearchCannotTakeAsAnID(t *testing.T) {
	opts := Options{TimestampField: "timestamp", DefaultZone: time.UTC}
	for name, id := range map[string]string{
		"over 512 bytes": strings.Repeat("x", 513),
		"invalid UTF-8":  "cam-\xff-1",
	} {
		src := testSource()
		src.MsgID = id
		_, err := Build([]byte(`{"a":1}`), src, opts)
		var rej *pipeline.RejectError
		if !errors.As(err, &rej) || rej.Reason != pipeline.ReasonBadMsgID {
			t.Errorf("%s: err = %v, want a %s rejection", name, err, pipeline.ReasonBadMsgID)
		}
	}
	src := testSource()
	src.MsgID = strings.Repeat("x", 512) // exactly the limit is fine
	if _, err := Build([]byte(`{"a":1}`), src, opts); err != nil {
		t.Errorf("a 512-byte id: %v", err)
	}
}

const day = 24 * time.Hour

// window is the accepted window of the tests below: a camera may upload a month
// of footage late, and run a day ahead.
var window = Options{TimestampField: "timestamp", DefaultZone: time.UTC, MaxPast: 30 * day, MaxFuture: day}

func TestEventTimesWithinTheWindowAreKept(t *testing.T) {
	lastWeek := published.Add(-7 * day).Truncate(time.Second) // a camera uploading last week's footage
	for raw, want := range map[string]time.Time{
		`{"timestamp":"` + lastWeek.Format(time.RFC3339) + `"}`:               lastWeek,
		`{"@timestamp":` + strconv.FormatInt(lastWeek.Unix(), 10) + `}`:       lastWeek,
		`{"timestamp":"` + strconv.FormatInt(lastWeek.UnixMilli(), 10) + `"}`: lastWeek,
		// The bounds themselves are inside.
		`{"timestamp":"` + published.Add(-30*day).Format(time.RFC3339Nano) + `"}`: published.Add(-30 * day),
		`{"timestamp":"` + published.Add(day).Format(time.RFC3339Nano) + `"}`:     published.Add(day),
	} {
		doc, err := Build([]byte(raw), testSource(), window)
		if err != nil {
			t.Fatalf("Build(%s): %v", raw, err)
		}
		if want := want.Truncate(time.Millisecond); !doc.Timestamp.Equal(want) || doc.Fallback != "" {
			t.Errorf("Build(%s): Timestamp %s (fallback %q), want %s", raw, doc.Timestamp, doc.Fallback, want)
		}
	}
}

// An event time outside the window is treated as any unreadable one: the publish
// time stands in, and nothing the producer sent is lost.
func TestEventTimesOutsideTheWindowFallBackToThePublishTime(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		original string // the producer's @timestamp, kept aside; "" if it had none
	}{
		{"own @timestamp a month and a millisecond ago",
			`{"@timestamp":"` + published.Add(-30*day-time.Millisecond).Format(time.RFC3339Nano) + `","label":"cat"}`,
			`"` + published.Add(-30*day-time.Millisecond).Format(time.RFC3339Nano) + `"`},
		{"configured field a day and a millisecond ahead",
			`{"timestamp":"` + published.Add(day+time.Millisecond).Format(time.RFC3339Nano) + `","label":"cat"}`, ""},
		{"the year 1969", `{"timestamp":"1969-07-20T20:17:40Z"}`, ""},
		{"a negative epoch", `{"@timestamp":-14182940}`, `-14182940`},
		{"the year 9999", `{"timestamp":"9999-12-31T23:59:59Z"}`, ""},
		{"the year 0001 with an offset", `{"@timestamp":"0001-01-01T00:00:00+01:00"}`, `"0001-01-01T00:00:00+01:00"`},
		{"an epoch string", `{"timestamp":"1"}`, ""},
		{"both fields outside", `{"@timestamp":1,"timestamp":"2100-01-01"}`, `1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := testSource()
			doc, err := Build([]byte(tt.raw), src, window)
			if err != nil {
				t.Fatalf("Build(%s): %v", tt.raw, err)
			}
			if !doc.Timestamp.Equal(publishedMillis) || doc.Fallback != TimestampOutOfRange {
				t.Errorf("Timestamp %s (fallback %q), want the publish time %s (fallback %q)",
					doc.Timestamp, doc.Fallback, publishedMillis, TimestampOutOfRange)
			}
			body := decodeObject(t, doc.Body)
			checkTimestamp(t, body, publishedMillis)
			checkNATS(t, body, src)
			if got := string(body[OriginalTimestampKey]); got != tt.original {
				t.Errorf("%s = %s, want %s", OriginalTimestampKey, got, tt.original)
			}
			for k, v := range decodeObject(t, []byte(tt.raw)) {
				if k != TimestampKey && !bytes.Equal(body[k], v) {
					t.Errorf("field %q = %s, want it unchanged: %s", k, body[k], v)
				}
			}
		})
	}
}

func TestAnOwnTimestampOutsideTheWindowGivesWayToTheConfiguredField(t *testing.T) {
	raw := `{"@timestamp":"1970-01-01T00:00:00Z","timestamp":"2024-05-06T07:00:00Z"}`
	doc, err := Build([]byte(raw), testSource(), window)
	if err != nil {
		t.Fatal(err)
	}
	body := decodeObject(t, doc.Body)
	if want := mustParse(t, "2024-05-06T07:00:00Z"); !doc.Timestamp.Equal(want) || doc.Fallback != "" {
		t.Errorf("Timestamp %s (fallback %q), want %s from the configured field", doc.Timestamp, doc.Fallback, want)
	}
	if got, want := string(body[OriginalTimestampKey]), `"1970-01-01T00:00:00Z"`; got != want {
		t.Errorf("%s = %s, want %s", OriginalTimestampKey, got, want)
	}
}

func TestAWindowBoundOfZeroIsNoBound(t *testing.T) {
	opts := window
	opts.MaxPast, opts.MaxFuture = 0, 0
	for raw, want := range map[string]string{
		`{"timestamp":"0001-01-01T00:00:00Z"}`: "0001-01-01T00:00:00Z",
		`{"timestamp":"9999-12-31T23:59:59Z"}`: "9999-12-31T23:59:59Z",
	} {
		doc, err := Build([]byte(raw), testSource(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if !doc.Timestamp.Equal(mustParse(t, want)) || doc.Fallback != "" {
			t.Errorf("Build(%s) = %s (fallback %q), want %s", raw, doc.Timestamp, doc.Fallback, want)
		}
	}
}
