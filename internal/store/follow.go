package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
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

// Settled returns, in stream order, the documents q selects, with their keys.
// These documents no longer change once q.UpTo is settled and refreshed, so
// no point in time is needed.
func (s *Store) Settled(ctx context.Context, q pipeline.SettledQuery) (pipeline.Page, error) {
	query := object{"filter": []any{
		object{"range": object{seqField: object{"gt": q.After, "lte": q.UpTo}}},
		timeRange(q.From, q.To),
	}}
	if len(q.Filters) > 0 {
		// Named, so that each hit tells which filters it matched: the followers
		// of every filter share this one search.
		should := make([]any, 0, len(q.Filters))
		for _, name := range slices.Sorted(maps.Keys(q.Filters)) {
			should = append(should, object{"bool": object{"filter": []any{q.Filters[name]}, "_name": name}})
		}
		query["should"], query["minimum_should_match"] = should, 1
	}
	req := searchRequest{
		Size:  q.Size,
		Query: object{"bool": query},
		// @timestamp second only to have it among each hit's sort values.
		Sort: []any{bySeq("asc"), object{"@timestamp": "asc"}},
	}
	req.Source = sourceFilter(q.Fields)
	parsed, err := s.search(ctx, req)
	if err != nil {
		return pipeline.Page{}, err
	}
	hits := parsed.Hits.Hits
	page := pipeline.Page{Docs: sources(hits, q.Fields)}
	if page.Keys, err = keys(hits, 1, 0); err != nil {
		return pipeline.Page{}, err
	}
	if len(q.Filters) > 0 {
		page.Matched = make([][]string, len(hits))
		for i, h := range hits {
			page.Matched[i] = h.Matched
		}
	}
	return page, nil
}
