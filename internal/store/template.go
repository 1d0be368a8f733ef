package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/annotated-data/pipeline/internal/document"
)

// TemplateSettings shape every new index.
type TemplateSettings struct {
	Shards          int
	Replicas        int
	RefreshInterval string
	IgnoreAbove     int // strings longer than this are kept in _source but not indexed
	// Nested are arrays of objects mapped as nested: each element is indexed
	// on its own, so that a query can require several conditions of one
	// element. Each element costs a hidden document of its own.
	Nested []string
}

// EnsureTemplate installs or updates the composable index template for this store's
// indices, so every new index gets the same settings and mapping. Existing indices
// keep theirs.
func (s *Store) EnsureTemplate(ctx context.Context, ts TemplateSettings) error {
	body, err := json.Marshal(s.template(ts))
	if err != nil {
		return fmt.Errorf("encode index template: %w", err)
	}
	name := s.cfg.IndexPrefix
	res, err := s.es.Indices.PutIndexTemplate(name, bytes.NewReader(body), s.es.Indices.PutIndexTemplate.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("put index template %s: %w", name, err)
	}
	defer drain(res)
	if res.IsError() {
		return fmt.Errorf("put index template %s: %w", name, responseError(res))
	}
	return nil
}

type object = map[string]any

func (s *Store) template(ts TemplateSettings) object {
	properties := object{
		"@timestamp": object{"type": "date"},
		// A producer's own @timestamp that the webserver rewrote
		// (document.OriginalTimestampKey): kept in _source, never indexed, so
		// that any type of value fits.
		"@timestamp_original": object{"type": "object", "enabled": false},
		// Members the mapping could not take at all (document.SetAside).
		document.AsideKey: document.AsideMapping(),
		"@nats": object{"properties": object{
			"subject":   object{"type": "keyword"},
			"stream":    object{"type": "keyword"},
			"seq":       object{"type": "long"},
			"published": object{"type": "date"},
		}},
	}
	for _, f := range ts.Nested {
		properties[f] = object{"type": "nested"}
	}
	return object{
		"index_patterns": []string{s.cfg.IndexPrefix + "-*"},
		"priority":       templatePriority(s.cfg.IndexPrefix),
		"_meta":          object{"managed_by": "annotated-data pipeline webserver"},
		"template": object{
			"settings": object{
				"number_of_shards":   ts.Shards,
				"number_of_replicas": ts.Replicas,
				"refresh_interval":   ts.RefreshInterval,
				// A value of the wrong type for its field's mapping (a string where
				// another message put a number) is kept in _source and listed in
				// the document's _ignored, not refused: see "Mapping policy" in
				// docs/guarantees.md.
				"index.mapping.ignore_malformed": true,
				// So are fields beyond the total field limit: one message with
				// thousands of keys must not take the mapping down for the others.
				"index.mapping.total_fields.ignore_dynamic_beyond_limit": true,
			},
			"mappings": object{
				// A field's type must not depend on which message came first each
				// day: strings stay strings, whatever they look like.
				"date_detection":    false,
				"numeric_detection": false,
				// Producers send free-form annotations: strings are exact-match keywords
				// unless a template says otherwise, and overlong ones are kept in
				// _source but not indexed rather than rejected.
				"dynamic_templates": []object{{
					"strings_as_keywords": object{
						"match_mapping_type": "string",
						"mapping":            object{"type": "keyword", "ignore_above": ts.IgnoreAbove},
					},
				}},
				"properties": properties,
			},
		},
	}
}
