package api

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestAutoPicksTheShortestRoundIntervalThatFits(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		from, to string
		buckets  int
		want     string
	}{
		{"2023-03-09T19:00:00Z", "2023-03-09T20:00:00Z", 100, "1m"},  // 60 bars
		{"2023-03-09T19:00:00Z", "2023-03-09T20:00:00Z", 60, "1m"},   // exactly 60
		{"2023-03-09T19:00:00Z", "2023-03-09T20:00:00Z", 59, "2m"},   // one short
		{"2023-03-09T19:00:30Z", "2023-03-09T20:00:00Z", 60, "1m"},   // a partial first bucket
		{"2023-03-09T19:00:30Z", "2023-03-09T20:00:01Z", 60, "2m"},   // and a partial last one
		{"2023-03-09T00:00:00Z", "2023-03-10T00:00:00Z", 100, "15m"}, // a day
		{"2023-03-01T00:00:00Z", "2023-03-08T00:00:00Z", 100, "2h"},  // a week
		{"2023-03-09T19:40:00Z", "2023-03-09T19:40:10Z", 100, "1s"},
		{"2020-01-01T00:00:00Z", "2023-01-01T00:00:00Z", 100, "14d"},
		{"2013-01-01T00:00:00Z", "2023-01-01T00:00:00Z", 100, "37d"}, // past the roundest: whole days
	}
	for _, tt := range tests {
		from, to := at(tt.from), at(tt.to)
		got := autoInterval(from, to, tt.buckets)
		if formatInterval(got) != tt.want {
			t.Errorf("auto for %s–%s in %d: %s, want %s", tt.from, tt.to, tt.buckets, formatInterval(got), tt.want)
		}
		if n := bucketCount(from, to, got); n > tt.buckets {
			t.Errorf("auto for %s–%s: %s makes %d buckets, more than %d", tt.from, tt.to, formatInterval(got), n, tt.buckets)
		}
	}
}

func TestCountsParametersAreCheckedLikeTheDocumentEndpoints(t *testing.T) {
	rules := rangeRules{defaultZone: time.UTC}
	const day = "start_date=2023-03-09&end_date=2023-03-10"
	tests := []struct {
		query, code, param, says string
	}{
		{"end_date=2023-03-10", "missing_parameter", "start_date", "start_date is required"},
		{"start_date=2023-03-10&end_date=2023-03-09", "invalid_range", "start_date", "after end_date"},
		{day + "&interval=1w", "invalid_parameter", "interval", "whole number of s, m, h or d"},
		{day + "&interval=", "invalid_parameter", "interval", "must be auto or"},
		{day + "&interval=0s", "invalid_parameter", "interval", "from 1s to 1d"},
		{day + "&interval=2d", "invalid_parameter", "interval", "from 1s to 1d"},
		{day + "&interval=1s", "too_many_buckets", "interval", "makes 86400 buckets of this range, more than 2000: use interval=1m or longer"},
		{day + "&interval=1m&buckets=100", "too_many_buckets", "interval", "more than 100: use interval=15m or longer"},
		{day + "&buckets=2001", "invalid_parameter", "buckets", "from 1 to 2000"},
		// Split 50 ways, 2,000 buckets would be more than Elasticsearch answers.
		{day + "&interval=1m&by=camera_id&top=50", "too_many_buckets", "interval", "more than 1176: use interval=2m or longer"},
		{day + "&top=0", "invalid_parameter", "top", "from 1 to 50"},
		{day + "&by=a,b", "invalid_parameter", "by", "one field"},
		{day + "&by=cam*", "invalid_parameter", "by", "without a wildcard"},
		{day + "&q=camera_id:", "invalid_query", "q", "at character 11"},
		{day + "&follow=true", "unknown_parameter", "follow", "the parameters are start_date, end_date, q, interval, buckets, by, top"},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.query)
		_, bad := parseCounts(q, rules)
		if bad == nil || bad.Code != tt.code || bad.Param != tt.param || !strings.Contains(bad.Message, tt.says) {
			t.Errorf("%s: %+v, want %s on %s saying %q", tt.query, bad, tt.code, tt.param, tt.says)
		}
	}
	q, _ := url.ParseQuery(day + "&interval=1m&q=camera_id:cam-07&by=labels.label&top=5")
	req, bad := parseCounts(q, rules)
	if bad != nil || req.Interval != time.Minute || req.By != "labels.label" || req.Top != 5 || req.expr == nil {
		t.Errorf("a good request: %+v, %+v", req, bad)
	}
}
