// Package store is everything the pipeline asks of Elasticsearch: the client, index
// naming and the index template, bulk indexing, and paging through a time range.
package store

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/annotated-data/pipeline/internal/config"
)

// Store talks to one Elasticsearch cluster on behalf of one index prefix.
type Store struct {
	es       *elasticsearch.Client
	prefix   string
	interval Interval
	observe  QueryObserver // may be nil; see WithQueryObserver
}

// Interval is the time span one index covers.
type Interval string

// Index intervals.
const (
	Daily   Interval = "day"
	Monthly Interval = "month"
)

// Option adjusts a Store.
type Option func(*Store)

// WithInterval sets how much time one index covers (daily by default).
func WithInterval(i Interval) Option { return func(s *Store) { s.interval = i } }

// New builds a client for cfg. It does not contact the cluster; see Check.
func New(cfg config.Elasticsearch, opts ...Option) (*Store, error) {
	es, err := newClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("elasticsearch client: %w", err)
	}
	s := &Store{es: es, prefix: cfg.IndexPrefix, interval: Daily}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Check makes one request that proves the cluster is reachable and genuine.
func (s *Store) Check(ctx context.Context) error {
	res, err := s.es.Cluster.Health(s.es.Cluster.Health.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("reach elasticsearch: %w", err)
	}
	defer drain(res)
	if res.IsError() {
		return fmt.Errorf("elasticsearch cluster health: %w", responseError(res))
	}
	return nil
}

// ResponseError is an error answer from Elasticsearch.
type ResponseError struct {
	Status int
	Type   string
	Reason string
}

func (e *ResponseError) Error() string {
	if e.Type == "" {
		return fmt.Sprintf("elasticsearch answered %d: %s", e.Status, e.Reason)
	}
	return fmt.Sprintf("elasticsearch answered %d %s: %s", e.Status, e.Type, e.Reason)
}

// Temporary reports whether the same request may succeed later.
func (e *ResponseError) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

func responseError(res *esapi.Response) error {
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var parsed struct {
		Error json.RawMessage `json:"error"`
	}
	e := &ResponseError{Status: res.StatusCode, Reason: strings.TrimSpace(string(body))}
	if json.Unmarshal(body, &parsed) == nil && len(parsed.Error) > 0 {
		var detail struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(parsed.Error, &detail) == nil && detail.Type != "" {
			e.Type, e.Reason = detail.Type, detail.Reason
		}
	}
	return e
}

// drain reads what is left of a response so its connection can be reused.
func drain(res *esapi.Response) {
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
}

// IndexName is the index a document with timestamp t belongs to: its UTC day's
// (<prefix>-2023.03.09) or month's (<prefix>-2023.03).
func (s *Store) IndexName(t time.Time) string {
	layout := "2006.01.02"
	if s.interval == Monthly {
		layout = "2006.01"
	}
	return s.prefix + "-" + t.UTC().Format(layout)
}

// pattern matches every index of this store.
func (s *Store) pattern() string { return s.prefix + "-*" }
