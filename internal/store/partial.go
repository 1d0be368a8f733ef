package store

import (
	"fmt"
	"strings"
)

// shardsAnswer is the _shards part of an answer that Elasticsearch gathers from
// several shards: searches, counts, points in time, refreshes. A shard that failed
// does not fail the answer by itself: it is left out, with a 200, and the answer
// is partial. allow_partial_search_results=false turns most such answers into an
// error, but not all of them (the count API has no such parameter, a refresh
// none either), so every answer is checked.
type shardsAnswer struct {
	Total    int `json:"total"`
	Failed   int `json:"failed"`
	Failures []struct {
		Index  string `json:"index"`
		Reason struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		} `json:"reason"`
	} `json:"failures"`
}

// err is a *PartialError when a shard failed.
func (s shardsAnswer) err() error {
	if s.Failed == 0 {
		return nil
	}
	e := &PartialError{Failed: s.Failed, Total: s.Total}
	for _, f := range s.Failures {
		e.Reasons = append(e.Reasons, strings.TrimSpace(f.Index+" "+f.Reason.Type+" "+f.Reason.Reason))
	}
	return e
}

// PartialError is an answer that misses the part of some shards: a page or a
// count without their documents, which is never taken for the whole. The
// shards are usually unavailable (a red index), so the same request may succeed
// later.
type PartialError struct {
	Failed, Total int
	Reasons       []string // what Elasticsearch said of each failed shard
}

func (e *PartialError) Error() string {
	msg := fmt.Sprintf("elasticsearch answered for only %d of %d shards", e.Total-e.Failed, e.Total)
	if len(e.Reasons) > 0 {
		msg += " (" + strings.Join(e.Reasons, "; ") + ")"
	}
	return msg
}
