package store

import (
	"context"
	"encoding/json"

	"github.com/annotated-data/pipeline/internal/document"
)

// PartlyIndexed counts this store's documents with fields that could not be
// indexed: those Elasticsearch lists in _ignored (a value of another type than its
// field's mapping, a field beyond the field limit, a string over ignore_above), and
// those stored with members set aside under document.AsideKey. A document may be
// both. These are the searches docs/guarantees.md gives operators to find them.
func (s *Store) PartlyIndexed(ctx context.Context) (ignored, setAside int64, err error) {
	body, _ := json.Marshal(object{
		"size": 0,
		"aggs": object{"partly": object{"filters": object{"filters": object{
			"ignored":   object{"exists": object{"field": "_ignored"}},
			"set_aside": object{"exists": object{"field": document.AsideKey + ".fields"}},
		}}}},
	})
	var aggs struct {
		Partly struct {
			Buckets map[string]struct {
				DocCount int64 `json:"doc_count"`
			} `json:"buckets"`
		} `json:"partly"`
	}
	if err := s.aggregate(ctx, "count partly indexed documents in", body, &aggs); err != nil {
		return 0, 0, err
	}
	b := aggs.Partly.Buckets
	return b["ignored"].DocCount, b["set_aside"].DocCount, nil
}
