package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/annotated-data/pipeline/internal/document"
)

// PartlyIndexed counts this store's documents with fields that could not be
// indexed: those Elasticsearch lists in _ignored (a value of another type than its
// field's mapping, a field beyond the field limit, a string over ignore_above), and
// those stored with members set aside under document.AsideKey. A document may be
// both. These are the searches the README gives operators to find them.
func (s *Store) PartlyIndexed(ctx context.Context) (ignored, setAside int64, err error) {
	body, _ := json.Marshal(object{
		"size": 0,
		"aggs": object{"partly": object{"filters": object{"filters": object{
			"ignored":   object{"exists": object{"field": "_ignored"}},
			"set_aside": object{"exists": object{"field": document.AsideKey + ".fields"}},
		}}}},
	})
	res, err := s.es.Search(
		s.es.Search.WithContext(ctx),
		s.es.Search.WithIndex(s.pattern()),
		s.es.Search.WithBody(bytes.NewReader(body)),
		s.es.Search.WithIgnoreUnavailable(true),
		s.es.Search.WithAllowNoIndices(true),
		s.es.Search.WithAllowPartialSearchResults(false),
		s.es.Search.WithFilterPath("_shards", "aggregations"),
	)
	if err != nil {
		return 0, 0, fmt.Errorf("count partly indexed documents in %s: %w", s.pattern(), err)
	}
	defer drain(res)
	if res.IsError() {
		return 0, 0, fmt.Errorf("count partly indexed documents in %s: %w", s.pattern(), responseError(res))
	}
	var parsed struct {
		Shards       shardsAnswer `json:"_shards"`
		Aggregations struct {
			Partly struct {
				Buckets map[string]struct {
					DocCount int64 `json:"doc_count"`
				} `json:"buckets"`
			} `json:"partly"`
		} `json:"aggregations"`
	}
	if err := json.NewDecoder(res.Body).Decode(&parsed); err != nil {
		return 0, 0, fmt.Errorf("decode partly indexed counts: %w", err)
	}
	if err := parsed.Shards.err(); err != nil {
		return 0, 0, fmt.Errorf("count partly indexed documents in %s: %w", s.pattern(), err)
	}
	b := parsed.Aggregations.Partly.Buckets
	return b["ignored"].DocCount, b["set_aside"].DocCount, nil
}
