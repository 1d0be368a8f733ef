package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// Bulk creates the items with op_type=create, so that a document that already exists
// is reported as a pipeline.Duplicate instead of being overwritten. A non-nil error means the
// request as a whole failed and no item's outcome is known.
func (s *Store) Bulk(ctx context.Context, items []pipeline.Item) ([]pipeline.ItemResult, error) {
	size := 0
	for _, it := range items {
		size += len(it.Body) + len(it.ID) + len(s.cfg.IndexPrefix) + 48
	}
	body := bytes.NewBuffer(make([]byte, 0, size))
	for _, it := range items {
		body.WriteString(`{"create":{"_index":"`)
		body.WriteString(s.IndexName(it.Timestamp))
		body.WriteString(`","_id":`)
		id, _ := json.Marshal(it.ID) // JSON's escapes, not Go's (strconv.Quote writes \x01)
		body.Write(id)
		body.WriteString("}}\n")
		body.Write(it.Body)
		body.WriteByte('\n')
	}
	res, err := s.es.Bulk(bytes.NewReader(body.Bytes()), s.es.Bulk.WithContext(ctx),
		// Only what decides each item's fate: a tenth of the full response's size.
		s.es.Bulk.WithFilterPath("errors", "items.*.status", "items.*.error.type", "items.*.error.reason"))
	if err != nil {
		return nil, fmt.Errorf("bulk request: %w", err)
	}
	defer drain(res)
	if res.IsError() {
		return nil, fmt.Errorf("bulk request: %w", responseError(res))
	}

	var parsed struct {
		Items []map[string]struct {
			Status int `json:"status"`
			Error  struct {
				Type   string `json:"type"`
				Reason string `json:"reason"`
			} `json:"error"`
		} `json:"items"`
	}
	if err := json.NewDecoder(res.Body).Decode(&parsed); err != nil {
		return nil, fmt.Errorf("decode bulk response: %w", err)
	}
	if len(parsed.Items) != len(items) {
		return nil, fmt.Errorf("bulk response has %d items for %d documents", len(parsed.Items), len(items))
	}
	results := make([]pipeline.ItemResult, len(items))
	for i, item := range parsed.Items {
		r := item["create"]
		results[i] = pipeline.ItemResult{Outcome: classify(r.Status, r.Error.Type), Status: r.Status, Type: r.Error.Type, Reason: r.Error.Reason}
	}
	return results, nil
}

func classify(status int, errType string) pipeline.Outcome {
	switch {
	case status >= 200 && status < 300:
		return pipeline.Created
	case status == http.StatusConflict && errType == "version_conflict_engine_exception":
		return pipeline.Duplicate
	case status == http.StatusBadRequest:
		// The document itself is at fault: a mapping conflict, unparsable values.
		return pipeline.Rejected
	default:
		// 429 and 5xx pass; 401, 403 and 404 (no privilege, index creation
		// disabled) are the cluster's setup, not the message's fault: keep the
		// message until an operator fixes it rather than dead-letter everything.
		return pipeline.Retry
	}
}
