package store

import (
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
		{400, "document_parsing_exception", pipeline.Rejected},
		{400, "mapper_parsing_exception", pipeline.Rejected},
		{404, "index_not_found_exception", pipeline.Retry},
		{403, "security_exception", pipeline.Retry},
	}
	for _, tt := range tests {
		if got := classify(tt.status, tt.errType); got != tt.want {
			t.Errorf("classify(%d, %s) = %v, want %v", tt.status, tt.errType, got, tt.want)
		}
	}
}
