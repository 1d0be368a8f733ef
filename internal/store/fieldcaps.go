package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// FieldCaps returns the types of fields in the store's indices: field, then
// type, then the indices that give the field that type (nil when it has one
// type in every index that maps it). A field no index maps is absent.
func (s *Store) FieldCaps(ctx context.Context, fields []string) (caps map[string]map[string][]string, err error) {
	start := time.Now()
	defer func() { s.observed("field_caps", start, err) }()
	caps = map[string]map[string][]string{}
	if len(fields) == 0 {
		return caps, nil
	}
	// Elasticsearch names an object only as the parent of a field asked for:
	// asking for labels alone answers nothing, labels.* answers labels too.
	asked := make([]string, 0, 2*len(fields))
	for _, f := range fields {
		asked = append(asked, f, f+".*")
	}
	// In the body: two thousand characters of q name up to twice as many of
	// fields, beyond the 4 KB Elasticsearch allows a request line.
	body, err := json.Marshal(object{"fields": asked})
	if err != nil {
		return nil, fmt.Errorf("encode field capabilities: %w", err)
	}
	res, err := s.es.FieldCaps(
		s.es.FieldCaps.WithContext(ctx),
		s.es.FieldCaps.WithIndex(s.pattern()),
		s.es.FieldCaps.WithBody(bytes.NewReader(body)),
		s.es.FieldCaps.WithIgnoreUnavailable(true),
		s.es.FieldCaps.WithAllowNoIndices(true),
		s.es.FieldCaps.WithFilterPath("fields.*.*.indices", "fields.*.*.type"),
	)
	if err != nil {
		return nil, fmt.Errorf("field capabilities of %s: %w", s.pattern(), err)
	}
	defer drain(res)
	if res.IsError() {
		return nil, fmt.Errorf("field capabilities of %s: %w", s.pattern(), responseError(res))
	}
	var answer struct {
		Fields map[string]map[string]struct {
			Indices []string `json:"indices"`
		} `json:"fields"`
	}
	if err := json.NewDecoder(res.Body).Decode(&answer); err != nil {
		return nil, fmt.Errorf("decode field capabilities: %w", err)
	}
	for field, types := range answer.Fields {
		caps[field] = make(map[string][]string, len(types))
		for typ, c := range types {
			caps[field][typ] = c.Indices
		}
	}
	return caps, nil
}
