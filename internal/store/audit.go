package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// What the audit asks of Elasticsearch. Every question is about @nats.seq of one
// stream's documents, and every answer comes from aggregations or small searches,
// so none reads the documents themselves.

// exactSequences is the cardinality aggregation's precision threshold: below it,
// Elasticsearch counts distinct values in a hash set, so the count is exact but for
// hash collisions, which can only make it short. Elasticsearch's maximum.
const exactSequences = 40000

// MaxExactBucket is the widest range of sequences whose distinct count SeqBuckets
// can give exactly (see exactSequences).
const MaxExactBucket = exactSequences / 2

// termsBatch bounds the values in one terms query (Elasticsearch's limit is 65,536).
const termsBatch = 10000

// SeqBuckets counts the documents of stream, and their distinct sequences, in
// consecutive ranges of width sequences from from to to (both included), one
// request for them all. width must not exceed MaxExactBucket.
func (s *Store) SeqBuckets(ctx context.Context, stream string, from, to, width uint64) ([]pipeline.SeqBucket, error) {
	if width == 0 || width > MaxExactBucket {
		return nil, fmt.Errorf("sequence buckets of %d: must be between 1 and %d", width, MaxExactBucket)
	}
	req := object{
		"size":             0,
		"track_total_hits": false,
		"query":            seqRange(stream, from, to),
		"aggs": object{"seqs": object{
			"histogram": object{
				"field": "@nats.seq", "interval": width, "offset": from % width,
				"min_doc_count": 0, "extended_bounds": object{"min": from, "max": to},
			},
			"aggs": object{"distinct": object{"cardinality": object{"field": "@nats.seq", "precision_threshold": exactSequences}}},
		}},
	}
	var parsed struct {
		Aggregations struct {
			Seqs struct {
				Buckets []struct {
					Key      float64 `json:"key"`
					DocCount int64   `json:"doc_count"`
					Distinct struct {
						Value int64 `json:"value"`
					} `json:"distinct"`
				} `json:"buckets"`
			} `json:"seqs"`
		} `json:"aggregations"`
	}
	if err := s.search(ctx, "count sequences", req, &parsed); err != nil {
		return nil, err
	}
	out := make([]pipeline.SeqBucket, 0, len(parsed.Aggregations.Seqs.Buckets))
	for _, b := range parsed.Aggregations.Seqs.Buckets {
		start := uint64(b.Key)
		if start < from || start > to { // extended bounds may add an edge bucket
			continue
		}
		out = append(out, pipeline.SeqBucket{From: start, To: min(start+width-1, to), Documents: b.DocCount, Sequences: b.Distinct.Value})
	}
	return out, nil
}

// SeqCounts returns how many documents of stream hold each sequence from from to
// to (both included), exactly: a composite aggregation, paged.
func (s *Store) SeqCounts(ctx context.Context, stream string, from, to uint64) (map[uint64]int, error) {
	return s.seqCounts(ctx, seqRange(stream, from, to))
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
		if err := s.search(ctx, "list sequences", req, &parsed); err != nil {
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

// CopiesOf lists the documents stored under ids, in any index of the prefix.
func (s *Store) CopiesOf(ctx context.Context, ids []string) ([]pipeline.Copy, error) {
	var out []pipeline.Copy
	for batch := range slices.Chunk(ids, termsBatch) {
		copies, err := s.copies(ctx, object{"ids": object{"values": batch}}, 2*len(batch))
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
	for batch := range slices.Chunk(seqs, termsBatch/2) {
		copies, err := s.copies(ctx, object{"bool": object{"filter": []object{
			{"term": object{"@nats.stream": stream}},
			{"terms": object{"@nats.seq": batch}},
		}}}, 2*termsBatch)
		if err != nil {
			return nil, err
		}
		out = append(out, copies...)
	}
	return out, nil
}

func (s *Store) copies(ctx context.Context, query object, size int) ([]pipeline.Copy, error) {
	req := object{"size": size, "track_total_hits": false, "query": query, "_source": false,
		"docvalue_fields": []string{"@nats.seq"}}
	var parsed struct {
		Hits struct {
			Hits []struct {
				Index  string `json:"_index"`
				ID     string `json:"_id"`
				Fields struct {
					Seq []json.Number `json:"@nats.seq"`
				} `json:"fields"`
			} `json:"hits"`
		} `json:"hits"`
	}
	if err := s.search(ctx, "find documents", req, &parsed); err != nil {
		return nil, err
	}
	out := make([]pipeline.Copy, 0, len(parsed.Hits.Hits))
	for _, h := range parsed.Hits.Hits {
		c := pipeline.Copy{Index: h.Index, ID: h.ID}
		if len(h.Fields.Seq) > 0 {
			c.Seq, _ = strconv.ParseUint(h.Fields.Seq[0].String(), 10, 64)
		}
		out = append(out, c)
	}
	return out, nil
}

func seqRange(stream string, from, to uint64) object {
	return object{"bool": object{"filter": []object{
		{"term": object{"@nats.stream": stream}},
		{"range": object{"@nats.seq": object{"gte": from, "lte": to}}},
	}}}
}

// search runs one search over every index of the prefix and decodes the answer
// into out. A shard that fails fails the search: a partial count would be a
// wrong one.
func (s *Store) search(ctx context.Context, what string, req object, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s: %w", what, err)
	}
	res, err := s.es.Search(
		s.es.Search.WithContext(ctx),
		s.es.Search.WithIndex(s.pattern()),
		s.es.Search.WithBody(bytes.NewReader(body)),
		s.es.Search.WithAllowPartialSearchResults(false),
	)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", what, s.pattern(), err)
	}
	defer drain(res)
	if res.IsError() {
		return fmt.Errorf("%s in %s: %w", what, s.pattern(), responseError(res))
	}
	dec := json.NewDecoder(res.Body)
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("decode %s: %w", what, err)
	}
	return nil
}
