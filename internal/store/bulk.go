package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/annotated-data/pipeline/internal/document"
	"github.com/annotated-data/pipeline/internal/pipeline"
)

// Bulk creates the items with op_type=create, so that a document that already exists
// is reported as a pipeline.Duplicate instead of being overwritten. A non-nil error means the
// request as a whole failed and no item's outcome is known.
func (s *Store) Bulk(ctx context.Context, items []pipeline.Item) ([]pipeline.ItemResult, error) {
	body := s.BulkBody(items)
	res, err := s.es.Bulk(bytes.NewReader(body), s.es.Bulk.WithContext(ctx),
		// Only what decides each item's fate: a tenth of the full response's size.
		s.es.Bulk.WithFilterPath("errors", "items.*.status", "items.*.error.type", "items.*.error.reason"))
	if err != nil {
		return nil, fmt.Errorf("bulk request: %w", err)
	}
	defer drain(res)
	if res.IsError() {
		return nil, fmt.Errorf("bulk request: %w", responseError(res))
	}

	results, err := decodeBulkResponse(res.Body, len(items))
	if err != nil {
		return nil, err
	}
	return results, nil
}

// BulkBody is the body of the bulk request that creates items: per item, an
// action line naming its index and id, then its document. Bulk sends it; the
// benchmarks send it themselves to measure Elasticsearch alone.
func (s *Store) BulkBody(items []pipeline.Item) []byte {
	size := 0
	for _, it := range items {
		size += len(it.Body) + len(it.ID) + len(s.cfg.IndexPrefix) + 48
	}
	body := make([]byte, 0, size)
	// A batch mostly falls in one day: name its index once, not per item.
	var index string
	var period time.Time
	for _, it := range items {
		if p := s.period(it.Timestamp); index == "" || !p.Equal(period) {
			index, period = s.IndexName(it.Timestamp), p
		}
		body = append(body, `{"create":{"_index":"`...)
		body = append(body, index...)
		body = append(body, `","_id":`...)
		body = document.AppendJSONString(body, it.ID)
		body = append(body, "}}\n"...)
		body = append(body, it.Body...)
		body = append(body, '\n')
	}
	return body
}

// bulkItem is one item of a bulk response, as filtered by Bulk's filter_path.
type bulkItem struct {
	Create struct {
		Status int `json:"status"`
		Error  struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		} `json:"error"`
	} `json:"create"`
}

// decodeBulkResponse reads each item's outcome from a bulk response for n items.
func decodeBulkResponse(r io.Reader, n int) ([]pipeline.ItemResult, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read bulk response: %w", err)
	}
	// Nearly every response says that no item failed: then every item was
	// created, and counting them is all that is left to check. Elasticsearch
	// writes "errors" first; any other shape is decoded in full.
	if bytes.HasPrefix(raw, []byte(`{"errors":false,"items":[`)) {
		if got := bytes.Count(raw, []byte(`"status":`)); got != n {
			return nil, fmt.Errorf("bulk response has %d items for %d documents", got, n)
		}
		results := make([]pipeline.ItemResult, n)
		for i := range results {
			results[i] = pipeline.ItemResult{Outcome: pipeline.Created, Status: http.StatusCreated}
		}
		return results, nil
	}
	parsed := struct {
		Items []bulkItem `json:"items"`
	}{Items: make([]bulkItem, 0, n)}
	if err := json.Unmarshal(raw, &parsed); err != nil {
		return nil, fmt.Errorf("decode bulk response: %w", err)
	}
	if len(parsed.Items) != n {
		return nil, fmt.Errorf("bulk response has %d items for %d documents", len(parsed.Items), n)
	}
	results := make([]pipeline.ItemResult, n)
	for i, item := range parsed.Items {
		r := item.Create
		results[i] = pipeline.ItemResult{Outcome: classify(r.Status, r.Error.Type), Status: r.Status, Type: r.Error.Type, Reason: r.Error.Reason}
	}
	return results, nil
}

// mappingRefusals are the error types of a document that the index's mapping
// cannot take as it is.
var mappingRefusals = map[string]bool{
	"document_parsing_exception": true, // Elasticsearch 8's name for a value that does not fit its field
	"mapper_parsing_exception":   true, // the same, before 8.8
	"illegal_argument_exception": true, // e.g. "mapper [a] cannot be changed from type [long] to [ObjectMapper]"
}

func classify(status int, errType string) pipeline.Outcome {
	switch {
	case status >= 200 && status < 300:
		return pipeline.Created
	case status == http.StatusConflict && errType == "version_conflict_engine_exception":
		return pipeline.Duplicate
	case status == http.StatusBadRequest && mappingRefusals[errType]:
		// The document does not fit the index's mapping, which other documents
		// shaped: a field of another type, an object where a value was, too deep.
		return pipeline.Unmapped
	case status == http.StatusBadRequest:
		// The document itself is at fault.
		return pipeline.Rejected
	default:
		// 429 and 5xx pass; 401, 403 and 404 (no privilege, index creation
		// disabled) are the cluster's setup, not the message's fault: keep the
		// message until an operator fixes it rather than dead-letter everything.
		return pipeline.Retry
	}
}
