package store

import (
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/config"
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
		s, err := New(config.Elasticsearch{URLs: []string{"http://127.0.0.1:9200"}, IndexPrefix: "annotations"}, WithInterval(tt.interval))
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
		want    Outcome
	}{
		{201, "", Created},
		{200, "", Created},
		{409, "version_conflict_engine_exception", Duplicate},
		{409, "some_other_conflict", Retry},
		{429, "es_rejected_execution_exception", Retry},
		{500, "internal_server_error", Retry},
		{503, "unavailable_shards_exception", Retry},
		{400, "document_parsing_exception", Rejected},
		{400, "mapper_parsing_exception", Rejected},
		{404, "index_not_found_exception", Retry},
		{403, "security_exception", Retry},
	}
	for _, tt := range tests {
		if got := classify(tt.status, tt.errType); got != tt.want {
			t.Errorf("classify(%d, %s) = %v, want %v", tt.status, tt.errType, got, tt.want)
		}
	}
}
