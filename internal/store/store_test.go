package store

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

func TestIndexNameIsTheUTCDayOrMonthOfTheTimestamp(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	// 00:30 in Berlin on March 10 is still March 9 in UTC.
	ts := time.Date(2023, 3, 10, 0, 30, 0, 0, berlin)
	tests := []struct {
		interval Interval
		want     string
	}{
		{Daily, "annotations-2023.03.09"},
		{Monthly, "annotations-2023.03"},
	}
	for _, tt := range tests {
		s, err := New(Config{Addresses: []string{"http://127.0.0.1:9200"}, IndexPrefix: "annotations", Interval: tt.interval})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.IndexName(ts); got != tt.want {
			t.Errorf("%s: IndexName(%v) = %s, want %s", tt.interval, ts, got, tt.want)
		}
	}
}

func TestBulkItemOutcomes(t *testing.T) {
	tests := []struct {
		status  int
		errType string
		want    pipeline.Outcome
	}{
		{201, "", pipeline.Created},
		{200, "", pipeline.Created},
		{409, "version_conflict_engine_exception", pipeline.Duplicate},
		{409, "some_other_conflict", pipeline.Retry},
		{429, "es_rejected_execution_exception", pipeline.Retry},
		{500, "internal_server_error", pipeline.Retry},
		{503, "unavailable_shards_exception", pipeline.Retry},
		{400, "document_parsing_exception", pipeline.Unmapped},
		{400, "mapper_parsing_exception", pipeline.Unmapped},
		{400, "illegal_argument_exception", pipeline.Unmapped},
		{400, "action_request_validation_exception", pipeline.Rejected},
		{404, "index_not_found_exception", pipeline.Retry},
		{403, "security_exception", pipeline.Retry},
	}
	for _, tt := range tests {
		if got := classify(tt.status, tt.errType); got != tt.want {
			t.Errorf("classify(%d, %s) = %v, want %v", tt.status, tt.errType, got, tt.want)
		}
	}
}

func TestBulkResponseOutcomes(t *testing.T) {
	tests := []struct {
		name, body string
		n          int
		want       []pipeline.Outcome
		wantErr    bool
	}{
		{"all created", `{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":201}}]}`, 2, []pipeline.Outcome{pipeline.Created, pipeline.Created}, false},
		{"all created, one item missing", `{"errors":false,"items":[{"create":{"status":201}}]}`, 2, nil, true},
		{"mixed", `{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},` +
			`{"create":{"status":400,"error":{"type":"document_parsing_exception","reason":"bad"}}},{"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}}]}`,
			4, []pipeline.Outcome{pipeline.Created, pipeline.Duplicate, pipeline.Unmapped, pipeline.Retry}, false},
		{"mixed, one item missing", `{"errors":true,"items":[{"create":{"status":201}}]}`, 2, nil, true},
		{"not JSON", `{"errors":false,"items":[`, 1, nil, true},
	}
	for _, tt := range tests {
		results, err := decodeBulkResponse(strings.NewReader(tt.body), tt.n)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: error %v, want error %t", tt.name, err, tt.wantErr)
			continue
		}
		var got []pipeline.Outcome
		for _, r := range results {
			got = append(got, r.Outcome)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: outcomes %v, want %v", tt.name, got, tt.want)
		}
	}
}

// Reads name a prefix's own indices and leave out those of a longer prefix that
// begins with it; templates take no exclusions, so the longer prefix's wins by
// priority. (Elasticsearch's answer to both is checked in prefixes_test.go.)
func TestNestedPrefixesReadApartAndTheLongerTemplateWins(t *testing.T) {
	tests := []struct {
		prefix, pattern, template string
		priority                  int
	}{
		{"annotations", "annotations-*,-annotations-*-*", "annotations-*", 111},
		{"annotations-lidar", "annotations-lidar-*,-annotations-lidar-*-*", "annotations-lidar-*", 117},
	}
	for _, tt := range tests {
		s, err := New(Config{IndexPrefix: tt.prefix})
		if err != nil {
			t.Fatal(err)
		}
		tmpl := s.template(TemplateSettings{})
		if got := s.pattern(); got != tt.pattern {
			t.Errorf("%s: pattern() = %s, want %s", tt.prefix, got, tt.pattern)
		}
		if got := tmpl["index_patterns"]; !slices.Equal(got.([]string), []string{tt.template}) || tmpl["priority"] != tt.priority {
			t.Errorf("%s: template for %v with priority %v, want [%s] with %d", tt.prefix, got, tmpl["priority"], tt.template, tt.priority)
		}
	}
}
