// Package store is everything the pipeline asks of Elasticsearch: the client, index
// naming and the index template, bulk indexing, and paging through a time range.
package store

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"
)

// Store talks to one Elasticsearch cluster on behalf of one index prefix.
type Store struct {
	es  *elasticsearch.Client
	cfg Config // with defaults applied
}

// Interval is the time span one index covers.
type Interval string

// Index intervals.
const (
	Daily   Interval = "day"
	Monthly Interval = "month"
)

// Config says where the cluster is, who the pipeline is to it and which
// certificate it trusts. The zero value of a field takes the default beside it.
type Config struct {
	// Addresses of the cluster's nodes (default http://127.0.0.1:9200); requests
	// are spread over them and retried on another. Ignored when CloudID is set.
	Addresses []string
	CloudID   string // an Elastic Cloud deployment, instead of Addresses

	IndexPrefix string   // indices are <prefix>-<date> (default "annotations")
	Interval    Interval // how much time one index covers (default Daily)

	// Authentication: Username and Password, or APIKey (the base64 "encoded"
	// form), or neither on a cluster without security.
	Username, Password string
	APIKey             string

	// Trust: the system's roots, unless one of these is set. CACertFile only names
	// CACert's origin in logs and errors.
	CACert             []byte // PEM
	CACertFile         string
	CAFingerprint      string // SHA-256 of the CA or HTTP certificate, 64 hex digits
	InsecureSkipVerify bool

	Compress bool // gzip request bodies

	// StartupTimeout is how long Connect waits for an unreachable cluster (0: not
	// at all).
	StartupTimeout time.Duration

	// PITTimeout bounds opening and closing a point in time (default 10s). Both
	// run to the end even when the caller has gone, so that none is left open
	// behind its back; a cluster slower than this fails the export with a
	// *TimeoutError.
	PITTimeout time.Duration

	// Observe, if set, is told the outcome of every request an export makes.
	Observe QueryObserver
}

func (c Config) withDefaults() Config {
	if len(c.Addresses) == 0 && c.CloudID == "" {
		c.Addresses = []string{"http://127.0.0.1:9200"}
	}
	c.IndexPrefix = cmp.Or(c.IndexPrefix, "annotations")
	c.Interval = cmp.Or(c.Interval, Daily)
	c.PITTimeout = cmp.Or(c.PITTimeout, 10*time.Second)
	return c
}

// New builds a client for cfg. It does not contact the cluster; see Connect and Check.
func New(cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	es, err := newClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("elasticsearch client: %w", err)
	}
	return &Store{es: es, cfg: cfg}, nil
}

// Check makes one request that proves the cluster is reachable and genuine, and
// can serve reads of the store's indices: it is a *RedError when they are red,
// and a *YellowError, degraded but serving every read, when a replica is missing.
func (s *Store) Check(ctx context.Context) error {
	h, err := s.Health(ctx)
	if err != nil {
		return err
	}
	switch h {
	case Red:
		return &RedError{Pattern: s.pattern()}
	case Yellow:
		return &YellowError{Pattern: s.pattern()}
	}
	return nil
}

// TimeoutError is a request Elasticsearch did not answer within its time: the
// cluster is slow (busy, or recovering), which an unreachable one is not.
type TimeoutError struct {
	Op    string
	After time.Duration
	Err   error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("elasticsearch did not %s within %s (slow, not unreachable): %v", e.Op, e.After, e.Err)
}

func (e *TimeoutError) Unwrap() error { return e.Err }

// TimedOut is how long the request was given.
func (e *TimeoutError) TimedOut() time.Duration { return e.After }

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

// StatusCode is the HTTP status Elasticsearch answered with.
func (e *ResponseError) StatusCode() int { return e.Status }

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
	if s.cfg.Interval == Monthly {
		layout = "2006.01"
	}
	return s.cfg.IndexPrefix + "-" + t.UTC().Format(layout)
}

// period is the start of the day or month, in UTC, whose index holds t.
func (s *Store) period(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	if s.cfg.Interval == Monthly {
		d = 1
	}
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// pattern names every index of this store and no other pipeline's, for reads,
// refreshes and listings. The indices of a longer prefix that starts the same
// (annotations-lidar-2023.03.09 beside annotations-2023.03.09) match
// <prefix>-* too, but they have a dash after <prefix>-, which a date suffix never
// has: the exclusion drops them. Index templates take no exclusions; see
// templatePriority.
func (s *Store) pattern() string {
	return s.cfg.IndexPrefix + "-*,-" + s.cfg.IndexPrefix + "-*-*"
}

// templatePriority makes the template of the longer of two nested prefixes win
// for its indices: Elasticsearch refuses two templates whose patterns overlap with
// the same priority, and <a>-* overlaps <b>-* only when one prefix nests in the
// other, which makes it the longer.
func templatePriority(prefix string) int { return 100 + len(prefix) }

// Transport is the client the store sends its requests with, for the few callers
// that speak to Elasticsearch's other APIs (security set-up) with the same
// addresses, credentials and trust.
func (s *Store) Transport() esapi.Transport { return s.es }
