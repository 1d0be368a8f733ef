package store

import (
	"context"
	"encoding/json"
	"fmt"
)

// Indices lists the names of the indices of the prefix, open or closed: those
// matching <prefix>-* but not a longer prefix's <prefix>-*-* (see pattern).
func (s *Store) Indices(ctx context.Context) ([]string, error) {
	res, err := s.es.Cat.Indices(
		s.es.Cat.Indices.WithContext(ctx),
		s.es.Cat.Indices.WithIndex(s.pattern()),
		s.es.Cat.Indices.WithFormat("json"),
		s.es.Cat.Indices.WithH("index"),
		s.es.Cat.Indices.WithExpandWildcards("open,closed"),
	)
	if err != nil {
		return nil, fmt.Errorf("list indices %s: %w", s.pattern(), err)
	}
	defer drain(res)
	if res.IsError() {
		return nil, fmt.Errorf("list indices %s: %w", s.pattern(), responseError(res))
	}
	var rows []struct {
		Index string `json:"index"`
	}
	if err := json.NewDecoder(res.Body).Decode(&rows); err != nil {
		return nil, fmt.Errorf("decode index list: %w", err)
	}
	names := make([]string, len(rows))
	for i, r := range rows {
		names[i] = r.Index
	}
	return names, nil
}

// DeleteIndex deletes one index, named in full: never a pattern.
func (s *Store) DeleteIndex(ctx context.Context, name string) error {
	res, err := s.es.Indices.Delete([]string{name},
		s.es.Indices.Delete.WithContext(ctx),
		// A name that matches nothing is an error rather than a silent no-op, and
		// no wildcard in it is ever expanded.
		s.es.Indices.Delete.WithExpandWildcards("none"),
		s.es.Indices.Delete.WithAllowNoIndices(false),
	)
	if err != nil {
		return fmt.Errorf("delete index %s: %w", name, err)
	}
	defer drain(res)
	if res.IsError() {
		return fmt.Errorf("delete index %s: %w", name, responseError(res))
	}
	return nil
}
