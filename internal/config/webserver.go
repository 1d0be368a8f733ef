package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/annotated-data/pipeline/internal/ingest"
)

// Ingester is the webserver's configuration. (The binary keeps the name the
// original system's operations documents use; inside, it is the ingester.)
type Ingester struct {
	NATS NATS
	Ingest
	zone               string
	maxPast, maxFuture string

	Elasticsearch Elasticsearch
	Index         Index

	AdminAddr      string
	AdminProfiling bool

	Upkeep Upkeep

	Logging Logging
}

// Upkeep is what the webserver does besides ingesting: deleting expired indices
// and auditing what it ingested.
type Upkeep struct {
	Retention     time.Duration // 0: indices are kept
	retention     string
	AuditInterval time.Duration // 0: no periodic audit
	AuditWindow   time.Duration
}

// Ingest is what the ingestion pipeline itself needs to know.
type Ingest = ingest.Config

// Index is how the webserver lays out and maps its indices.
type Index struct {
	Interval        string // day or month
	Shards          int
	Replicas        int
	RefreshInterval string
	IgnoreAbove     int
	// Nested are the arrays of objects mapped as nested, so that a query's
	// conditions in braces hold within one element.
	Nested []string
}

// IngesterVars declares every variable the webserver reads; cfg receives the values.
func IngesterVars(cfg *Ingester) []Var {
	vars := cfg.NATS.vars()
	vars = append(vars, []Var{
		{Name: "NATS_STREAM", Default: "ANNOTATIONS", Usage: "JetStream stream to consume; created if missing", target: &cfg.Stream},
		{Name: "NATS_SUBJECTS", Default: "annotations.>", Usage: "subjects of the stream when it is created (comma-separated)", target: &cfg.Subjects},
		{Name: "NATS_STREAM_MAX_AGE", Default: "0s", Usage: "when creating the stream: drop messages older than this (0s: keep)", target: &cfg.StreamMaxAge},
		{Name: "NATS_STREAM_MAX_BYTES", Default: "-1", Usage: "when creating the stream: size limit in bytes (-1: none)", target: &cfg.StreamMaxBytes},
		{Name: "NATS_STREAM_REPLICAS", Default: "1", Usage: "when creating the streams: replicas in a NATS cluster", target: &cfg.StreamReplicas},
		{Name: "NATS_DUPLICATE_WINDOW", Default: "2m", Usage: "when creating the stream: how long Nats-Msg-Id duplicates are dropped on publish", target: &cfg.DuplicateWindow},
		{Name: "NATS_DURABLE", Default: "webserver", Usage: "durable consumer name; replicas with the same name share the work", target: &cfg.Durable},
		{Name: "NATS_DLQ_STREAM", Default: "<NATS_STREAM>_DLQ", Usage: "dead-letter stream (subjects <NATS_DLQ_SUBJECT_PREFIX>.>) for messages that can never be indexed; created if missing",
			target: &cfg.DLQStream, derive: func() string { return ingest.DeadLetterStream(cfg.Stream) }},
		{Name: "NATS_DLQ_SUBJECT_PREFIX", Default: "dlq", Usage: "a dead letter's subject is <prefix>.<original subject>; default: dlq for ANNOTATIONS_DLQ, else NATS_DLQ_STREAM in lower case (lidar_dlq), so each pipeline on one NATS server has its own",
			target: &cfg.DLQSubjectPrefix, derive: func() string { return ingest.DeadLetterSubjectPrefix(cfg.DLQStream) }},
		{Name: "NATS_MAX_ACK_PENDING", Default: "0", Usage: "most messages un-acked at once across all replicas (0: BULK_MAX_DOCS × (BULK_WORKERS + 2))", target: &cfg.MaxAckPending},
		{Name: "NATS_ACK_WAIT", Default: "4s", Usage: "how long NATS waits for an ack before redelivering: what a killed webserver's messages, and with them every follower, wait; the webserver keeps the messages it works on in progress every third of it", target: &cfg.AckWait},
		{Name: "NATS_MAX_DELIVER", Default: "5", Usage: "a message delivered more often than this (crash loops) is dead-lettered", target: &cfg.MaxDeliver},
	}...)
	vars = append(vars, cfg.Elasticsearch.vars()...)
	vars = append(vars,
		Var{Name: "ES_INDEX_INTERVAL", Default: "day", Usage: "one index per day (<prefix>-YYYY.MM.DD) or month (<prefix>-YYYY.MM)", target: &cfg.Index.Interval},
		Var{Name: "ES_INDEX_SHARDS", Default: "1", Usage: "primary shards of each new index", target: &cfg.Index.Shards},
		Var{Name: "ES_INDEX_REPLICAS", Default: "1", Usage: "replicas of each new index (0 on a single node keeps it green)", target: &cfg.Index.Replicas},
		Var{Name: "ES_INDEX_REFRESH_INTERVAL", Default: "1s", Usage: "how soon new documents become searchable", target: &cfg.Index.RefreshInterval},
		Var{Name: "ES_KEYWORD_IGNORE_ABOVE", Default: "1024", Usage: "longer strings are stored but not indexed", target: &cfg.Index.IgnoreAbove},
		Var{Name: "ES_NESTED_FIELDS", Default: "labels", Usage: "arrays of objects mapped as nested in new indices, so that q's labels:{ label:person and confidence >= 0.8 } holds within one element (comma-separated; none: no field)", target: &cfg.Index.Nested},
		Var{Name: "TIMESTAMP_FIELD", Default: "timestamp", Usage: "message field holding the event time (a message's own readable @timestamp wins)", target: &cfg.TimestampField},
		Var{Name: "TIMESTAMP_REQUIRED", Default: "false", Usage: "true: dead-letter messages without a usable timestamp; false: use the publish time", target: &cfg.TimestampRequired},
		Var{Name: "TIMESTAMP_DEFAULT_ZONE", Default: "UTC", Usage: "IANA zone for timestamps written without one", target: &cfg.zone},
		Var{Name: "TIMESTAMP_MAX_PAST", Default: "30d", Usage: "event times more than this before the publish time count as unreadable (off: no bound)", target: &cfg.maxPast},
		Var{Name: "TIMESTAMP_MAX_FUTURE", Default: "1d", Usage: "event times more than this after the publish time count as unreadable (off: no bound)", target: &cfg.maxFuture},
		Var{Name: "MAX_MESSAGE_BYTES", Default: "1048576", Usage: "larger messages are dead-lettered", target: &cfg.MaxMessageBytes},
		Var{Name: "BULK_MAX_DOCS", Default: "5000", Usage: "documents per bulk request", target: &cfg.BulkMaxDocs},
		Var{Name: "BULK_MAX_BYTES", Default: "5242880", Usage: "bytes per bulk request", target: &cfg.BulkMaxBytes},
		Var{Name: "BULK_MAX_WAIT", Default: "1s", Usage: "longest one pull waits for a first message when none is waiting; a partly filled batch never waits: it is sent at once", target: &cfg.BulkMaxWait},
		Var{Name: "BULK_WORKERS", Default: "2", Usage: "bulk requests in flight at once", target: &cfg.BulkWorkers},
		Var{Name: "BULK_TIMEOUT", Default: "60s", Usage: "a bulk request taking longer is abandoned and retried", target: &cfg.BulkTimeout},
		Var{Name: "ADMIN_ADDR", Default: ":8081", Usage: "address of /healthz, /readyz and /metrics", target: &cfg.AdminAddr},
		Var{Name: "ADMIN_PPROF", Default: "false", Usage: "true: serve Go profiles on ADMIN_ADDR/debug/pprof/ (for diagnosis)", target: &cfg.AdminProfiling},
		Var{Name: "PROGRESS_INTERVAL", Default: "10s", Usage: "how often a progress line is logged while there is work", target: &cfg.ProgressInterval},
		Var{Name: "SHUTDOWN_TIMEOUT", Default: "30s", Usage: "how long a stop may take to finish in-flight bulks", target: &cfg.ShutdownTimeout},
		Var{Name: "ES_RETENTION", Default: "off", Usage: "delete this webserver's indices once their whole day (or month) is older than this, e.g. 30d; checked hourly", target: &cfg.Upkeep.retention},
		Var{Name: "AUDIT_INTERVAL", Default: "0s", Usage: "audit the last AUDIT_WINDOW this often and export the figures as webserver_audit_* metrics (0s: never)", target: &cfg.Upkeep.AuditInterval},
		Var{Name: "AUDIT_WINDOW", Default: "24h", Usage: "how far back each periodic audit reaches (by publish time)", target: &cfg.Upkeep.AuditWindow},
	)
	return append(vars, cfg.Logging.vars()...)
}

// LoadIngester reads and validates the webserver's configuration.
func LoadIngester(getenv func(string) string) (Ingester, error) {
	var cfg Ingester
	c := load(getenv, IngesterVars(&cfg))
	cfg.NATS.check(c)
	c.add(cfg.Stream != "", "NATS_STREAM", "must not be empty")
	c.add(len(cfg.Subjects) > 0, "NATS_SUBJECTS", "must name at least one subject")
	c.add(cfg.StreamMaxAge >= 0, "NATS_STREAM_MAX_AGE", "must not be negative")
	c.add(cfg.StreamMaxBytes == -1 || cfg.StreamMaxBytes > 0, "NATS_STREAM_MAX_BYTES", "must be -1 or positive")
	c.add(cfg.StreamReplicas >= 1 && cfg.StreamReplicas <= 5, "NATS_STREAM_REPLICAS", "must be between 1 and 5")
	c.positiveDuration("NATS_DUPLICATE_WINDOW", cfg.DuplicateWindow)
	c.add(cfg.Durable != "", "NATS_DURABLE", "must not be empty")
	c.add(cfg.DLQStream != "" && cfg.DLQStream != cfg.Stream, "NATS_DLQ_STREAM", "must be set and differ from NATS_STREAM")
	c.add(validSubjectPrefix(cfg.DLQSubjectPrefix), "NATS_DLQ_SUBJECT_PREFIX", "%q is not a subject prefix like dlq or lidar.dlq (dot-separated tokens, no wildcards or spaces)", cfg.DLQSubjectPrefix)
	for _, subject := range cfg.Subjects {
		c.add(!subjectsOverlap(cfg.DLQSubjectPrefix+".>", subject), "NATS_DLQ_SUBJECT_PREFIX",
			"%q would dead-letter into NATS_SUBJECTS (%s), which the webserver consumes", cfg.DLQSubjectPrefix, subject)
	}
	c.add(cfg.MaxAckPending >= 0, "NATS_MAX_ACK_PENDING", "must not be negative")
	c.add(cfg.AckWait >= 3*time.Second, "NATS_ACK_WAIT", "must be at least 3s, got %s", cfg.AckWait)
	c.positive("NATS_MAX_DELIVER", cfg.MaxDeliver)
	cfg.Elasticsearch.check(c)
	c.oneOf("ES_INDEX_INTERVAL", cfg.Index.Interval, "day", "month")
	c.positive("ES_INDEX_SHARDS", cfg.Index.Shards)
	c.add(cfg.Index.Replicas >= 0, "ES_INDEX_REPLICAS", "must not be negative")
	_, err := time.ParseDuration(cfg.Index.RefreshInterval)
	c.add(err == nil || cfg.Index.RefreshInterval == "-1", "ES_INDEX_REFRESH_INTERVAL", "%q is not a duration like 1s or 30s (or -1 to disable)", cfg.Index.RefreshInterval)
	c.positive("ES_KEYWORD_IGNORE_ABOVE", cfg.Index.IgnoreAbove)
	if len(cfg.Index.Nested) == 1 && cfg.Index.Nested[0] == "none" {
		cfg.Index.Nested = nil
	}
	for _, f := range cfg.Index.Nested {
		c.add(validFieldPath(f), "ES_NESTED_FIELDS", "%q is not a field name like labels or meta.boxes", f)
	}
	c.add(cfg.TimestampField != "", "TIMESTAMP_FIELD", "must not be empty")
	cfg.DefaultZone = c.zone("TIMESTAMP_DEFAULT_ZONE", cfg.zone)
	cfg.TimestampMaxPast = c.span("TIMESTAMP_MAX_PAST", cfg.maxPast)
	cfg.TimestampMaxFuture = c.span("TIMESTAMP_MAX_FUTURE", cfg.maxFuture)
	c.positive("MAX_MESSAGE_BYTES", cfg.MaxMessageBytes)
	c.positive("BULK_MAX_DOCS", cfg.BulkMaxDocs)
	c.positive("BULK_MAX_BYTES", cfg.BulkMaxBytes)
	c.positiveDuration("BULK_MAX_WAIT", cfg.BulkMaxWait)
	c.positive("BULK_WORKERS", cfg.BulkWorkers)
	c.positiveDuration("BULK_TIMEOUT", cfg.BulkTimeout)
	if cfg.MaxAckPending == 0 {
		cfg.MaxAckPending = ingest.DefaultMaxAckPending(cfg.BulkMaxDocs, cfg.BulkWorkers)
	}
	c.add(cfg.BulkMaxDocs <= cfg.MaxAckPending, "BULK_MAX_DOCS", "%d must not exceed NATS_MAX_ACK_PENDING (%d), or a batch could never fill", cfg.BulkMaxDocs, cfg.MaxAckPending)
	c.positiveDuration("PROGRESS_INTERVAL", cfg.ProgressInterval)
	c.positiveDuration("SHUTDOWN_TIMEOUT", cfg.ShutdownTimeout)
	cfg.Upkeep.check(c)
	cfg.Logging.check(c)
	return cfg, c.err()
}

func (u *Upkeep) check(c *checks) {
	var err error
	u.Retention, err = days(u.retention)
	c.add(err == nil, "ES_RETENTION", "%q is not off or a span like 30d or 720h", u.retention)
	c.add(u.Retention >= 0, "ES_RETENTION", "must not be negative")
	c.add(u.AuditInterval >= 0, "AUDIT_INTERVAL", "must not be negative")
	c.positiveDuration("AUDIT_WINDOW", u.AuditWindow)
}

// span reads a bound of the accepted window of event times: days (30d) or a Go
// duration (36h); off and 0 are none.
func (c *checks) span(name, s string) time.Duration {
	d, err := days(s)
	c.add(err == nil, name, "%q is not off or a span like 30d or 36h", s)
	c.add(err != nil || d >= 0, name, "must not be negative")
	return d
}

// days reads a span in days (30d) or as a Go duration (720h); off and 0 are none.
func days(s string) (time.Duration, error) {
	switch s {
	case "off", "0":
		return 0, nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.Atoi(n)
		if err == nil && (int64(d) > math.MaxInt64/int64(24*time.Hour) || int64(d) < math.MinInt64/int64(24*time.Hour)) {
			err = fmt.Errorf("%d days is more than a time.Duration holds", d)
		}
		return time.Duration(d) * 24 * time.Hour, err
	}
	return time.ParseDuration(s)
}

// validSubjectPrefix accepts dot-separated NATS subject tokens without wildcards.
func validSubjectPrefix(p string) bool {
	for _, tok := range strings.Split(p, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>") {
			return false
		}
	}
	return true
}

// subjectsOverlap reports whether some subject matches both filters a and b
// (with NATS wildcards: * one token, > one or more at the end).
func subjectsOverlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		if at[i] == ">" || bt[i] == ">" {
			return true
		}
		if at[i] != bt[i] && at[i] != "*" && bt[i] != "*" {
			return false
		}
	}
	return len(at) == len(bt)
}

// Explain turns a failure of the ingester into a message that names the variable
// that fixes it; other errors pass through.
func (i Ingester) Explain(err error) error {
	if errors.Is(err, ingest.ErrDeadLetterSubjectsTaken) {
		return fmt.Errorf("%w; give this pipeline a NATS_DLQ_SUBJECT_PREFIX of its own (now %q)", err, i.DLQSubjectPrefix)
	}
	return err
}

// validFieldPath reports whether f is a field name a mapping can hold: parts of
// letters, digits, _ @ and -, joined by dots.
func validFieldPath(f string) bool {
	for part := range strings.SplitSeq(f, ".") {
		if part == "" || strings.Trim(part, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@-") != "" {
			return false
		}
	}
	return true
}
