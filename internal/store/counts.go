package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// Counts counts the documents of r's range that match its filter, per
// interval, and split by the top values of a field when asked: one search of
// aggregations, without a document.
func (s *Store) Counts(ctx context.Context, r pipeline.CountsRequest) (pipeline.Counts, error) {
	if r.Interval < time.Millisecond {
		return pipeline.Counts{}, fmt.Errorf("counts: interval %s is shorter than a millisecond", r.Interval)
	}
	filter := rangeFilter(r.From, r.To, r.Filter)
	overTime := object{"date_histogram": object{
		"field":          "@timestamp",
		"fixed_interval": strconv.FormatInt(r.Interval.Milliseconds(), 10) + "ms",
		// Every bucket of the range, empty ones too: a chart without holes.
		"min_doc_count":   0,
		"extended_bounds": object{"min": r.From.UnixMilli(), "max": r.To.UnixMilli() - 1},
	}}
	aggs := object{"over_time": overTime}
	if r.By != "" {
		terms := object{"terms": object{"field": r.By, "size": r.Top}, "aggs": object{"over_time": overTime}}
		if r.ByNested != "" {
			// The values are in nested documents; reverse_nested counts the frames
			// that hold each, over their own @timestamp.
			terms["aggs"] = object{"frames": object{"reverse_nested": object{}, "aggs": object{"over_time": overTime}}}
			aggs["by"] = object{"nested": object{"path": r.ByNested}, "aggs": object{"values": terms}}
		} else {
			aggs["by"] = terms
		}
	}
	body, err := json.Marshal(object{
		"size":             0,
		"track_total_hits": false,
		"query":            object{"bool": object{"filter": filter}},
		"aggs":             aggs,
	})
	if err != nil {
		return pipeline.Counts{}, fmt.Errorf("encode counts: %w", err)
	}
	start := time.Now()
	var parsed countsResponse
	err = s.aggregate(ctx, "count", body, &parsed)
	if err == nil || ctx.Err() == nil {
		s.observed("counts", start, err)
	}
	if err != nil {
		return pipeline.Counts{}, err
	}
	if len(parsed.OverTime.Buckets) == 0 {
		// No index at all (a new deployment): Elasticsearch answers no
		// aggregation, and the chart still needs its empty buckets.
		step := r.Interval.Milliseconds()
		for key := floorDiv(r.From.UnixMilli(), step) * step; key < r.To.UnixMilli(); key += step {
			parsed.OverTime.Buckets = append(parsed.OverTime.Buckets, histogramBucket{Key: key})
		}
	}
	return parsed.counts(r)
}

// histogram is a date_histogram's answer.
type histogram struct {
	Buckets []histogramBucket `json:"buckets"`
}

type histogramBucket struct {
	Key      int64 `json:"key"` // the bucket's start, in Unix milliseconds
	DocCount int64 `json:"doc_count"`
}

// floorDiv is a / b rounded down: bucket keys before 1970 are negative.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// valueBucket is one value of a terms aggregation, with its histogram (under
// frames for a field of nested objects).
type valueBucket struct {
	Key      json.RawMessage `json:"key"`
	DocCount int64           `json:"doc_count"`
	OverTime histogram       `json:"over_time"`
	Frames   struct {
		DocCount int64     `json:"doc_count"`
		OverTime histogram `json:"over_time"`
	} `json:"frames"`
}

// countsResponse is the aggregations of a Counts search.
type countsResponse struct {
	OverTime histogram `json:"over_time"`
	By       struct {
		Buckets []valueBucket `json:"buckets"`
		Values  struct {
			Buckets []valueBucket `json:"buckets"`
		} `json:"values"`
	} `json:"by"`
}

func (c countsResponse) counts(r pipeline.CountsRequest) (pipeline.Counts, error) {
	var out pipeline.Counts
	index := make(map[int64]int, len(c.OverTime.Buckets))
	for i, b := range c.OverTime.Buckets {
		out.Buckets = append(out.Buckets, pipeline.Bucket{Start: time.UnixMilli(b.Key).UTC(), Count: b.DocCount})
		out.Total += b.DocCount
		index[b.Key] = i
	}
	if r.By == "" {
		return out, nil
	}
	values := c.By.Buckets
	if r.ByNested != "" {
		values = c.By.Values.Buckets
	}
	for i := range out.Buckets {
		out.Buckets[i].By = map[string]int64{}
	}
	for _, v := range values {
		value, count, hist := keyText(v.Key), v.DocCount, v.OverTime
		if r.ByNested != "" {
			count, hist = v.Frames.DocCount, v.Frames.OverTime
		}
		out.Values = append(out.Values, pipeline.ValueCount{Value: value, Count: count})
		for _, b := range hist.Buckets {
			i, ok := index[b.Key]
			if !ok {
				return pipeline.Counts{}, fmt.Errorf("counts: a bucket at %d for %s=%s is not among the range's buckets", b.Key, r.By, value)
			}
			out.Buckets[i].By[value] = b.DocCount
		}
	}
	return out, nil
}

// keyText is a terms key as text: a string's own text, a number as written.
func keyText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}

// aggregate runs a search of aggregations alone over the store's indices, and
// decodes them into aggs; what says what it does, for errors.
func (s *Store) aggregate(ctx context.Context, what string, body []byte, aggs any) error {
	res, err := s.es.Search(
		s.es.Search.WithContext(ctx),
		s.es.Search.WithIndex(s.pattern()),
		s.es.Search.WithBody(bytes.NewReader(body)),
		s.es.Search.WithIgnoreUnavailable(true),
		s.es.Search.WithAllowNoIndices(true),
		// A count with a shard missing would be wrong without saying so.
		s.es.Search.WithAllowPartialSearchResults(false),
		s.es.Search.WithFilterPath("aggregations", "_shards.total", "_shards.failed", "_shards.failures"),
	)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, s.pattern(), err)
	}
	defer drain(res)
	if res.IsError() {
		return fmt.Errorf("%s %s: %w", what, s.pattern(), responseError(res))
	}
	var parsed struct {
		Shards       shardsAnswer    `json:"_shards"`
		Aggregations json.RawMessage `json:"aggregations"`
	}
	if err := json.NewDecoder(res.Body).Decode(&parsed); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", what, s.pattern(), err)
	}
	if err := parsed.Shards.err(); err != nil {
		return fmt.Errorf("%s %s: %w", what, s.pattern(), err)
	}
	if len(parsed.Aggregations) == 0 {
		return nil // no index to aggregate over: nothing counted
	}
	if err := json.Unmarshal(parsed.Aggregations, aggs); err != nil {
		return fmt.Errorf("%s %s: decode the aggregations: %w", what, s.pattern(), err)
	}
	return nil
}
