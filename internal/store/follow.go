package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// Refresh makes every document indexed before the call searchable when it
// returns. Follow calls it after reading the webserver's ack floor, which is what
// makes "every document of a settled message is visible" hold rather than merely
// being likely after refresh_interval. Indices that have nothing new cost next to
// nothing. The backend's user needs the index privilege maintenance for it.
func (s *Store) Refresh(ctx context.Context) (err error) {
	start := time.Now()
	defer func() { s.observed("refresh", start, err) }()
	res, err := s.es.Indices.Refresh(
		s.es.Indices.Refresh.WithContext(ctx),
		s.es.Indices.Refresh.WithIndex(s.pattern()),
		s.es.Indices.Refresh.WithIgnoreUnavailable(true),
		s.es.Indices.Refresh.WithAllowNoIndices(true),
	)
	if err != nil {
		return fmt.Errorf("refresh %s: %w", s.pattern(), err)
	}
	defer drain(res)
	if res.IsError() {
		return fmt.Errorf("refresh %s: %w", s.pattern(), responseError(res))
	}
	// A shard that was not refreshed may hide settled documents from the next
	// step. (An unassigned one counts in neither: it is not searched either, and
	// the search fails on it.)
	var answer struct {
		Shards shardsAnswer `json:"_shards"`
	}
	if err := json.NewDecoder(res.Body).Decode(&answer); err != nil {
		return fmt.Errorf("decode refresh of %s: %w", s.pattern(), err)
	}
	if err := answer.Shards.err(); err != nil {
		return fmt.Errorf("refresh %s: %w", s.pattern(), err)
	}
	return nil
}

// Settled returns, in stream order, up to size documents created by messages with
// sequences in (after, upTo] whose @timestamp falls in [from, to), with their keys.
// Fields restricts the documents as in pipeline.Range. These documents no longer
// change once upTo is settled and refreshed, so no point in time is needed.
func (s *Store) Settled(ctx context.Context, after, upTo uint64, from, to time.Time, size int, fields []string) (pipeline.Page, error) {
	req := searchRequest{
		Size: size,
		Query: object{"bool": object{"filter": []any{
			object{"range": object{seqField: object{"gt": after, "lte": upTo}}},
			timeRange(from, to),
		}}},
		// @timestamp second only to have it among each hit's sort values.
		Sort: []any{bySeq("asc"), object{"@timestamp": "asc"}},
	}
	req.Source = sourceFilter(fields)
	parsed, err := s.search(ctx, req)
	if err != nil {
		return pipeline.Page{}, err
	}
	hits := parsed.Hits.Hits
	page := pipeline.Page{Docs: sources(hits, fields)}
	if page.Keys, err = keys(hits, 1, 0); err != nil {
		return pipeline.Page{}, err
	}
	return page, nil
}
