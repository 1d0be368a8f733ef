package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Range selects documents by @timestamp: From inclusive, To exclusive, so adjacent
// ranges never return a document twice.
type Range struct {
	From, To time.Time
	PageSize int
}

// Page is one page of documents, as the raw _source bytes Elasticsearch returned.
type Page [][]byte

const pitKeepAlive = "1m"

// Export calls fn with each page of documents in the range, oldest first. It pages
// through a point in time with search_after, so a range of any size is read with
// memory bounded by one page, and documents indexed meanwhile do not shift pages.
// The point in time is closed when Export returns, however it returns.
func (s *Store) Export(ctx context.Context, r Range, fn func(Page) error) error {
	pit, err := s.openPIT(ctx)
	if err != nil {
		return err
	}
	defer func() {
		// The caller's context may already be cancelled (a client that went away):
		// the point in time must still be released.
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		s.closePIT(closeCtx, pit)
	}()

	var after json.RawMessage
	for {
		page, last, nextPIT, err := s.searchPage(ctx, r, pit, after)
		if err != nil {
			return err
		}
		pit = nextPIT
		if len(page) == 0 {
			return nil
		}
		if err := fn(page); err != nil {
			return err
		}
		if len(page) < r.PageSize {
			return nil
		}
		after = last
	}
}

type searchRequest struct {
	Size           int             `json:"size"`
	Query          any             `json:"query"`
	Sort           []any           `json:"sort"`
	PIT            pitRef          `json:"pit"`
	SearchAfter    json.RawMessage `json:"search_after,omitempty"`
	TrackTotalHits bool            `json:"track_total_hits"`
}

type pitRef struct {
	ID        string `json:"id"`
	KeepAlive string `json:"keep_alive"`
}

func (s *Store) searchPage(ctx context.Context, r Range, pit string, after json.RawMessage) (Page, json.RawMessage, string, error) {
	req := searchRequest{
		Size: r.PageSize,
		Query: object{"range": object{"@timestamp": object{
			"gte":    r.From.UTC().Format(time.RFC3339Nano),
			"lt":     r.To.UTC().Format(time.RFC3339Nano),
			"format": "strict_date_optional_time_nanos",
		}}},
		Sort:           []any{object{"@timestamp": "asc"}, object{"_shard_doc": "asc"}},
		PIT:            pitRef{ID: pit, KeepAlive: pitKeepAlive},
		SearchAfter:    after,
		TrackTotalHits: false,
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, nil, "", fmt.Errorf("encode search: %w", err)
	}
	res, err := s.es.Search(s.es.Search.WithContext(ctx), s.es.Search.WithBody(bytes.NewReader(body)))
	if err != nil {
		return nil, nil, "", fmt.Errorf("search %s: %w", s.pattern(), err)
	}
	defer drain(res)
	if res.IsError() {
		return nil, nil, "", fmt.Errorf("search %s: %w", s.pattern(), responseError(res))
	}
	var parsed struct {
		PITID string `json:"pit_id"`
		Hits  struct {
			Hits []struct {
				Source json.RawMessage `json:"_source"`
				Sort   json.RawMessage `json:"sort"`
			} `json:"hits"`
		} `json:"hits"`
	}
	if err := json.NewDecoder(res.Body).Decode(&parsed); err != nil {
		return nil, nil, "", fmt.Errorf("decode search response: %w", err)
	}
	hits := parsed.Hits.Hits
	page := make(Page, len(hits))
	for i, h := range hits {
		page[i] = h.Source
	}
	var last json.RawMessage
	if len(hits) > 0 {
		last = hits[len(hits)-1].Sort
	}
	if parsed.PITID == "" {
		parsed.PITID = pit
	}
	return page, last, parsed.PITID, nil
}

func (s *Store) openPIT(ctx context.Context) (string, error) {
	res, err := s.es.OpenPointInTime([]string{s.pattern()}, pitKeepAlive, s.es.OpenPointInTime.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("open point in time on %s: %w", s.pattern(), err)
	}
	defer drain(res)
	if res.IsError() {
		return "", fmt.Errorf("open point in time on %s: %w", s.pattern(), responseError(res))
	}
	var parsed struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(res.Body).Decode(&parsed); err != nil {
		return "", fmt.Errorf("decode point in time: %w", err)
	}
	return parsed.ID, nil
}

func (s *Store) closePIT(ctx context.Context, id string) {
	body, _ := json.Marshal(object{"id": id})
	res, err := s.es.ClosePointInTime(s.es.ClosePointInTime.WithContext(ctx), s.es.ClosePointInTime.WithBody(bytes.NewReader(body)))
	if err == nil {
		drain(res)
	}
	// A point in time that could not be closed expires after its keep-alive.
}
