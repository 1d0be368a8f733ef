package api

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/datetime"
	"github.com/annotated-data/pipeline/internal/pipeline"
)

func utc(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var defaultRules = rangeRules{defaultZone: time.UTC, pageSize: 1000}

func TestParseQueryReadsEveryParameter(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		query string
		rules rangeRules
		want  pipeline.Range
	}{
		{"zone-less dates are UTC by default", "start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00", defaultRules,
			pipeline.Range{From: utc(t, "2023-03-09T19:40:00Z"), To: utc(t, "2023-03-09T19:45:00Z"), PageSize: 1000}},
		{"zone-less dates are read in the configured zone", "start_date=2023-03-09T19:40:00&end_date=2023-03-10",
			rangeRules{defaultZone: berlin, pageSize: 7},
			pipeline.Range{From: utc(t, "2023-03-09T18:40:00Z"), To: utc(t, "2023-03-09T23:00:00Z"), PageSize: 7}},
		{"offsets and Z", "start_date=2023-03-09T20:40:00%2B01:00&end_date=2023-03-09T14:45:00.5-05:00", defaultRules,
			pipeline.Range{From: utc(t, "2023-03-09T19:40:00Z"), To: utc(t, "2023-03-09T19:45:00.5Z"), PageSize: 1000}},
		{"a '+' that became a space", "start_date=2023-03-09T20:40:00+01:00&end_date=2023-03-09T20:45:00+01:00", defaultRules,
			pipeline.Range{From: utc(t, "2023-03-09T19:40:00Z"), To: utc(t, "2023-03-09T19:45:00Z"), PageSize: 1000}},
		{"an empty range is valid", "start_date=2023-03-09&end_date=2023-03-09", defaultRules,
			pipeline.Range{From: utc(t, "2023-03-09T00:00:00Z"), To: utc(t, "2023-03-09T00:00:00Z"), PageSize: 1000}},
		{"limit, order and fields", "start_date=2023-03-09&end_date=2023-03-10&limit=25&order=desc&fields=@timestamp,camera_id,objects.*", defaultRules,
			pipeline.Range{From: utc(t, "2023-03-09T00:00:00Z"), To: utc(t, "2023-03-10T00:00:00Z"), PageSize: 1000,
				Limit: 25, Order: pipeline.Descending, Fields: []string{"@timestamp", "camera_id", "objects.*"}}},
		{"order asc is the default", "start_date=2023-03-09&end_date=2023-03-10&order=asc", defaultRules,
			pipeline.Range{From: utc(t, "2023-03-09T00:00:00Z"), To: utc(t, "2023-03-10T00:00:00Z"), PageSize: 1000, Order: pipeline.Ascending}},
		{"a range exactly as long as the maximum", "start_date=2023-03-09&end_date=2023-03-10",
			rangeRules{defaultZone: time.UTC, pageSize: 1000, maxRange: 24 * time.Hour},
			pipeline.Range{From: utc(t, "2023-03-09T00:00:00Z"), To: utc(t, "2023-03-10T00:00:00Z"), PageSize: 1000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			got, bad := parseQuery(q, tt.rules)
			if bad != nil {
				t.Fatalf("parseQuery(%s): %+v", tt.query, *bad)
			}
			if !got.From.Equal(tt.want.From) || !got.To.Equal(tt.want.To) {
				t.Errorf("range = [%v, %v), want [%v, %v)", got.From, got.To, tt.want.From, tt.want.To)
			}
			got.From, got.To, tt.want.From, tt.want.To = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if !reflect.DeepEqual(got.Range, tt.want) {
				t.Errorf("parseQuery(%s) = %+v, want %+v", tt.query, got, tt.want)
			}
		})
	}
}

func TestParseQueryNamesTheParameterAtFault(t *testing.T) {
	const ok = "start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00"
	tests := []struct {
		query       string
		code, param string
	}{
		{"end_date=2023-03-09T19:45:00", "missing_parameter", "start_date"},
		{"start_date=&end_date=2023-03-09T19:45:00", "missing_parameter", "start_date"},
		{"start_date=2023-03-09T19:40:00", "missing_parameter", "end_date"},
		{"start_date=yesterday&end_date=2023-03-09T19:45:00", "invalid_parameter", "start_date"},
		{"start_date=2023-03-09T19:40:00&end_date=2023-13-09", "invalid_parameter", "end_date"},
		{"start_date=2023-03-09 19:40:00&end_date=2023-03-09T19:45:00", "invalid_parameter", "start_date"},
		{"start_date=2023-03-09T19:40:00 1:00&end_date=2023-03-09T19:45:00", "invalid_parameter", "start_date"},
		{"start_date=1678390800&end_date=2023-03-09T19:45:00", "invalid_parameter", "start_date"},
		{"start_date=2023-03-09T19:40:00%2B25:00&end_date=2023-03-09T19:45:00", "invalid_parameter", "start_date"},
		// Offsets beyond RFC 3339's 23:59, which Go's time.Parse takes.
		{"start_date=2023-03-09T19:40:00%2B24:00&end_date=2023-03-09T19:45:00", "invalid_parameter", "start_date"},
		{"start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00%2B21:60", "invalid_parameter", "end_date"},
		{"start_date=2023-03-09T19:40:00+24:00&end_date=2023-03-09T19:45:00", "invalid_parameter", "start_date"},
		{"start_date=2023-03-09T19:45:00&end_date=2023-03-09T19:40:00", "invalid_range", "start_date"},
		{"start_date=2023-03-09&end_date=2023-03-10T00:00:00.001", "range_too_long", "end_date"},
		{ok + "&start_date=2023-03-09T19:41:00", "invalid_parameter", "start_date"},
		{ok + "&limit=0", "invalid_parameter", "limit"},
		{ok + "&limit=-5", "invalid_parameter", "limit"},
		{ok + "&limit=%2B5", "invalid_parameter", "limit"},
		{ok + "&limit=ten", "invalid_parameter", "limit"},
		{ok + "&limit=", "invalid_parameter", "limit"},
		{ok + "&limit=1000000001", "invalid_parameter", "limit"},
		{ok + "&limit=99999999999999999999", "invalid_parameter", "limit"},
		{ok + "&order=newest", "invalid_parameter", "order"},
		{ok + "&order=DESC", "invalid_parameter", "order"},
		{ok + "&order=", "invalid_parameter", "order"},
		{ok + "&fields=", "invalid_parameter", "fields"},
		{ok + "&fields=a,,b", "invalid_parameter", "fields"},
		{ok + "&fields=a%22b", "invalid_parameter", "fields"},
		{ok + "&fields=" + strings.Repeat("f,", 64) + "f", "invalid_parameter", "fields"},
		{ok + "&fields=" + strings.Repeat("f", 257), "invalid_parameter", "fields"},
		{ok + "&limt=10", "unknown_parameter", "limt"},
		{ok + "&api_key=secret", "unknown_parameter", "api_key"},
	}
	rules := rangeRules{defaultZone: time.UTC, pageSize: 1000, maxRange: 24 * time.Hour}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			_, bad := parseQuery(q, rules)
			if bad == nil {
				t.Fatalf("parseQuery(%s) accepted it, want %s for %s", tt.query, tt.code, tt.param)
			}
			if bad.Code != tt.code || bad.Param != tt.param || bad.Message == "" {
				t.Errorf("parseQuery(%s) = %+v, want code %s for %s with a message", tt.query, *bad, tt.code, tt.param)
			}
		})
	}
}

func TestADateWithASpaceHintsAtEncodingThePlus(t *testing.T) {
	_, err := parseDate("2023-03-09T19:40:00 1:00", time.UTC)
	if err == nil || !strings.Contains(err.Error(), "%2B") {
		t.Errorf("parseDate of a broken offset with a space: %v, want a hint to write '+' as %%2B", err)
	}
}

// FuzzParseDate checks the one thing parseDate adds to datetime.Parse: that the
// space-for-plus repair never accepts what it should not.
func FuzzParseDate(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseDate(s, time.UTC)
		direct, directErr := datetime.Parse(s, time.UTC)
		switch {
		case directErr == nil:
			// Whatever the strict parser accepts is read exactly as it reads it.
			if err != nil || !got.Equal(direct) {
				t.Fatalf("parseDate(%q) = %v, %v; datetime.Parse gives %v", s, got, err, direct)
			}
		case err == nil:
			// Accepted only through the repair: the input had exactly one space, in
			// place of the '+' of a valid offset.
			fixed := strings.Replace(s, " ", "+", 1)
			want, fixedErr := datetime.Parse(fixed, time.UTC)
			if strings.Count(s, " ") != 1 || fixedErr != nil || !got.Equal(want) {
				t.Fatalf("parseDate(%q) = %v, but %q parses to %v, %v", s, got, fixed, want, fixedErr)
			}
		}
		if err == nil && got.Location() != time.UTC {
			t.Fatalf("parseDate(%q) returned a non-UTC time %v", s, got)
		}
	})
}
