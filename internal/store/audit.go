package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// What the audit asks of Elasticsearch. Every question is about @nats.seq of one
// stream's documents, and every answer comes from aggregations or small searches,
// so none reads the documents themselves.

// termsBatch bounds the values in one terms query (Elasticsearch's limit is 65,536).
const termsBatch = 10000

// exactSum is the largest sum a sum aggregation, a double, holds exactly.
const exactSum = 1 << 53

// SeqBuckets counts the documents of stream, and sums their sequences, in buckets
// of width sequences aligned on offset, over ranges, in one request; buckets
// without documents are left out. Both figures are exact: a count, and a sum kept
// below 2^53, where a double still counts in ones.
func (s *Store) SeqBuckets(ctx context.Context, stream string, ranges []pipeline.SeqRange, width, offset uint64) ([]pipeline.SeqBucket, error) {
	last := ranges[len(ranges)-1].To
	if width == 0 || float64(width)*float64(last) >= exactSum {
		return nil, fmt.Errorf("sequence buckets of %d up to %d: a bucket's sum of sequences could exceed 2^53", width, last)
	}
	req := object{
		"size":             0,
		"track_total_hits": false,
		"query":            seqRanges(stream, ranges),
		"aggs": object{"seqs": object{
			"histogram": object{"field": "@nats.seq", "interval": width, "offset": offset % width, "min_doc_count": 1},
			"aggs":      object{"sum": object{"sum": object{"field": "@nats.seq"}}},
		}},
	}
	var parsed struct {
		Aggregations struct {
			Seqs struct {
				Buckets []struct {
					Key      float64 `json:"key"`
					DocCount int64   `json:"doc_count"`
					Sum      struct {
						Value float64 `json:"value"`
					} `json:"sum"`
				} `json:"buckets"`
			} `json:"seqs"`
		} `json:"aggregations"`
	}
	if err := s.searchJSON(ctx, "count sequences", req, &parsed); err != nil {
		return nil, err
	}
	out := make([]pipeline.SeqBucket, len(parsed.Aggregations.Seqs.Buckets))
	for i, b := range parsed.Aggregations.Seqs.Buckets {
		start := uint64(b.Key)
		out[i] = pipeline.SeqBucket{From: start, To: start + width - 1, Documents: b.DocCount, SeqSum: uint64(b.Sum.Value)}
	}
	return out, nil
}

// SeqCounts returns how many documents of stream hold each sequence in ranges,
// exactly: a composite aggregation, paged.
func (s *Store) SeqCounts(ctx context.Context, stream string, ranges []pipeline.SeqRange) (map[uint64]int, error) {
	return s.seqCounts(ctx, seqRanges(stream, ranges))
}

// SeqsStored returns, of seqs, those that have documents of stream, and how many.
func (s *Store) SeqsStored(ctx context.Context, stream string, seqs []uint64) (map[uint64]int, error) {
	out := map[uint64]int{}
	for batch := range slices.Chunk(seqs, termsBatch) {
		counts, err := s.seqCounts(ctx, object{"bool": object{"filter": []object{
			{"term": object{"@nats.stream": stream}},
			{"terms": object{"@nats.seq": batch}},
		}}})
		if err != nil {
			return nil, err
		}
		for seq, n := range counts {
			out[seq] = n
		}
	}
	return out, nil
}

func (s *Store) seqCounts(ctx context.Context, query object) (map[uint64]int, error) {
	out := map[uint64]int{}
	var after any
	for {
		composite := object{"size": termsBatch, "sources": []object{{"seq": object{"terms": object{"field": "@nats.seq"}}}}}
		if after != nil {
			composite["after"] = after
		}
		req := object{"size": 0, "track_total_hits": false, "query": query, "aggs": object{"seqs": object{"composite": composite}}}
		var parsed struct {
			Aggregations struct {
				Seqs struct {
					AfterKey any `json:"after_key"`
					Buckets  []struct {
						Key struct {
							Seq uint64 `json:"seq"`
						} `json:"key"`
						DocCount int `json:"doc_count"`
					} `json:"buckets"`
				} `json:"seqs"`
			} `json:"aggregations"`
		}
		if err := s.searchJSON(ctx, "list sequences", req, &parsed); err != nil {
			return nil, err
		}
		for _, b := range parsed.Aggregations.Seqs.Buckets {
			out[b.Key.Seq] += b.DocCount
		}
		if len(parsed.Aggregations.Seqs.Buckets) < termsBatch || parsed.Aggregations.Seqs.AfterKey == nil {
			return out, nil
		}
		after = parsed.Aggregations.Seqs.AfterKey
	}
}

// resultWindow is the most hits one search may ask for: the default of
// index.max_result_window. Listings longer than that are paged (see copies).
const resultWindow = 10000

// CopiesOf lists the documents stored under ids, in any index of the prefix.
func (s *Store) CopiesOf(ctx context.Context, ids []string) ([]pipeline.Copy, error) {
	var out []pipeline.Copy
	for batch := range slices.Chunk(ids, termsBatch) {
		copies, err := s.copies(ctx, object{"ids": object{"values": batch}})
		if err != nil {
			return nil, err
		}
		out = append(out, copies...)
	}
	return out, nil
}

// CopiesOfSeqs lists the documents of stream that hold seqs.
func (s *Store) CopiesOfSeqs(ctx context.Context, stream string, seqs []uint64) ([]pipeline.Copy, error) {
	var out []pipeline.Copy
	for batch := range slices.Chunk(seqs, termsBatch) {
		copies, err := s.copies(ctx, object{"bool": object{"filter": []object{
			{"term": object{"@nats.stream": stream}},
			{"terms": object{"@nats.seq": batch}},
		}}})
		if err != nil {
			return nil, err
		}
		out = append(out, copies...)
	}
	return out, nil
}

// copies lists the documents query selects, however many: pages of resultWindow
// through a point in time, with search_after on _shard_doc. A single search
// would be refused past index.max_result_window, which a whole deleted daily
// index (tens of thousands of missing sequences to look up) passes at once.
func (s *Store) copies(ctx context.Context, query object) (out []pipeline.Copy, err error) {
	pit, err := s.openPIT(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { s.closePIT(ctx, pit) }()
	var after json.RawMessage
	for {
		req := object{"size": resultWindow, "track_total_hits": false, "query": query, "_source": false,
			"docvalue_fields": []string{"@nats.seq"}, "sort": []object{{"_shard_doc": "asc"}},
			"pit": object{"id": pit, "keep_alive": pitKeepAlive}}
		if after != nil {
			req["search_after"] = after
		}
		var parsed struct {
			PITID string `json:"pit_id"`
			Hits  struct {
				Hits []struct {
					Index  string          `json:"_index"`
					ID     string          `json:"_id"`
					Sort   json.RawMessage `json:"sort"`
					Fields struct {
						Seq []json.Number `json:"@nats.seq"`
					} `json:"fields"`
				} `json:"hits"`
			} `json:"hits"`
		}
		if err := s.searchJSON(ctx, "find documents", req, &parsed); err != nil {
			return nil, err
		}
		pit = cmp.Or(parsed.PITID, pit)
		hits := parsed.Hits.Hits
		for _, h := range hits {
			c := pipeline.Copy{Index: h.Index, ID: h.ID}
			if len(h.Fields.Seq) > 0 {
				c.Seq, _ = strconv.ParseUint(h.Fields.Seq[0].String(), 10, 64)
			}
			out = append(out, c)
		}
		if len(hits) < resultWindow {
			return out, nil
		}
		after = hits[len(hits)-1].Sort
	}
}

// seqRanges selects the documents of stream whose sequence is in one of ranges.
func seqRanges(stream string, ranges []pipeline.SeqRange) object {
	should := make([]object, len(ranges))
	for i, r := range ranges {
		should[i] = object{"range": object{"@nats.seq": object{"gte": r.From, "lte": r.To}}}
	}
	return object{"bool": object{
		"filter": []object{{"term": object{"@nats.stream": stream}}, {"bool": object{"should": should, "minimum_should_match": 1}}},
	}}
}

// searchJSON runs one search over every index of the prefix (or the point in
// time req names) and decodes the answer into out. A shard that fails fails the search: a partial count would be a
// wrong one.
func (s *Store) searchJSON(ctx context.Context, what string, req object, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s: %w", what, err)
	}
	opts := []func(*esapi.SearchRequest){
		s.es.Search.WithContext(ctx),
		s.es.Search.WithBody(bytes.NewReader(body)),
		s.es.Search.WithAllowPartialSearchResults(false),
	}
	if _, ok := req["pit"]; !ok {
		// A point in time names its indices; a plain search must.
		opts = append(opts, s.es.Search.WithIndex(s.pattern()))
	}
	res, err := s.es.Search(opts...)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", what, s.pattern(), err)
	}
	defer drain(res)
	if res.IsError() {
		return fmt.Errorf("%s in %s: %w", what, s.pattern(), responseError(res))
	}
	answer, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	var shards struct {
		Shards shardsAnswer `json:"_shards"`
	}
	if err := json.Unmarshal(answer, &shards); err != nil {
		return fmt.Errorf("decode %s: %w", what, err)
	}
	if err := shards.Shards.err(); err != nil {
		return fmt.Errorf("%s in %s: %w", what, s.pattern(), err)
	}
	dec := json.NewDecoder(bytes.NewReader(answer))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("decode %s: %w", what, err)
	}
	return nil
}
