package store

import (
	"context"
	"encoding/json"
	"fmt"
)

// Health is the status Elasticsearch's cluster health gives a set of indices.
type Health string

// Health statuses.
const (
	// Green: every shard has all its copies.
	Green Health = "green"
	// Yellow: every primary shard has a copy, some replica has none; nothing is
	// missing to a reader.
	Yellow Health = "yellow"
	// Red: a primary shard has no copy. Its documents cannot be read, and since
	// every read spans all of the store's indices (a point in time over the
	// pattern, a search of the pattern), every read fails.
	Red Health = "red"
)

// Health asks Elasticsearch for the health of the store's indices: those of
// other applications on the same cluster do not matter here. No index yet is green.
func (s *Store) Health(ctx context.Context) (Health, error) {
	res, err := s.es.Cluster.Health(
		s.es.Cluster.Health.WithContext(ctx),
		s.es.Cluster.Health.WithIndex(s.pattern()),
		s.es.Cluster.Health.WithFilterPath("status"),
	)
	if err != nil {
		return "", fmt.Errorf("reach elasticsearch: %w", err)
	}
	defer drain(res)
	if res.IsError() {
		return "", fmt.Errorf("elasticsearch cluster health of %s: %w", s.pattern(), responseError(res))
	}
	var parsed struct {
		Status Health `json:"status"`
	}
	if err := json.NewDecoder(res.Body).Decode(&parsed); err != nil {
		return "", fmt.Errorf("decode cluster health of %s: %w", s.pattern(), err)
	}
	switch parsed.Status {
	case Green, Yellow, Red:
		return parsed.Status, nil
	}
	return "", fmt.Errorf("elasticsearch cluster health of %s: unknown status %q", s.pattern(), parsed.Status)
}

// RedError says the store's indices are red: reachable, but unable to serve a read.
type RedError struct{ Pattern string }

func (e *RedError) Error() string {
	return fmt.Sprintf("indices %s are red: a primary shard has no copy, so every read of them fails until it is allocated "+
		"(GET _cluster/health/%s?level=indices names the index, GET _cluster/allocation/explain says why)", e.Pattern, e.Pattern)
}

// Red marks the error for readiness checks, which tell it from an unreachable store.
func (e *RedError) Red() bool { return true }

// YellowError says the store's indices are yellow: every document can be read,
// but some replica has no copy, so that losing one more node may make them red.
// It is degraded, not failed: readiness names it and stays ready.
type YellowError struct{ Pattern string }

func (e *YellowError) Error() string {
	return fmt.Sprintf("indices %s are yellow: a replica shard has no copy; every document can be read, with less redundancy "+
		"(GET _cluster/allocation/explain says why it is unassigned; on a single node, set ES_INDEX_REPLICAS=0)", e.Pattern)
}

// Degraded marks the error as one that leaves readiness standing.
func (e *YellowError) Degraded() bool { return true }
