// Package pipeline is the vocabulary the ingester, the API and the store share:
// documents to index and what became of them, time ranges and their pages, and the
// reasons a message is dead-lettered. It imports nothing of NATS, Elasticsearch or
// HTTP, so the logic that uses it can be tested with fakes in milliseconds; the
// adapters (store, natsconn) implement the interfaces that ingest and api declare
// in these terms.
package pipeline

import "time"

// Item is one document to create in the store.
type Item struct {
	ID        string
	Timestamp time.Time // chooses the index
	Body      []byte
}

// Outcome is what became of one item of a bulk request.
type Outcome int

// Item outcomes.
const (
	Created   Outcome = iota // stored now
	Duplicate                // already stored under the same index and id: a redelivery
	Retry                    // not stored, may succeed later (429, 5xx, the cluster's setup)
	Rejected                 // not stored, never will be
	// Unmapped: not stored, because the index's mapping cannot take one of its
	// fields (another message gave the field another type, too deep a nesting);
	// it will be once the fields the store names are set aside.
	Unmapped
)

func (o Outcome) String() string {
	switch o {
	case Created:
		return "created"
	case Duplicate:
		return "duplicate"
	case Retry:
		return "retry"
	case Rejected:
		return "rejected"
	case Unmapped:
		return "unmapped"
	}
	return "unknown"
}

// ItemResult describes the outcome of one item, in the order the items were given.
type ItemResult struct {
	Outcome Outcome
	Status  int    // the store's status for the item, e.g. 201, 409, 429
	Type    string // the store's error type, e.g. mapper_parsing_exception
	Reason  string
}

// Order is the direction an export walks through time.
type Order int

// Export orders.
const (
	Ascending  Order = iota // oldest first
	Descending              // newest first
)

// Range selects documents by @timestamp: From inclusive, To exclusive, so adjacent
// ranges never return a document twice.
type Range struct {
	From, To time.Time
	// PageSize is the most documents fetched per page. FirstPageSize, when set
	// and smaller, is the first page's size, and each page after it doubles up to
	// PageSize: the first documents go out at once, and the rest in the large
	// pages that Elasticsearch serves fastest.
	PageSize      int
	FirstPageSize int
	Order         Order
	// Limit is the most documents to return; 0 returns them all.
	Limit int
	// Fields restricts each document to these fields (wildcards allowed); nil
	// returns whole documents.
	Fields []string
	// Filter, when not nil, keeps only the documents that match it: an
	// Elasticsearch query as plain data (package query builds it from q).
	Filter any
	// Slices, when above 1, reads the range in that many parts at once, merged
	// back into the same order and pages as one stream: sooner where
	// Elasticsearch has processors and shards to spare, at the cost of more
	// searches in flight.
	Slices int

	// Keys asks for each document's Key (Page.Keys), for cursors: documents are
	// then ordered by Key, which a later export can continue from, instead of by
	// @timestamp and the cheaper but per-export shard order.
	Keys bool
	// After, when set, continues an export after this key (in Order): a resumed
	// stream. It needs Keys.
	After *Key
	// UpTo, when set, keeps only documents created by messages with stream
	// sequence ≤ *UpTo: the history a follow hands over to live documents at.
	UpTo *uint64
}

// Key is a document's place in a stream: its @timestamp (Unix milliseconds) and
// the stream sequence of the message that created it (@nats.seq), which no other
// document shares.
type Key struct {
	Time int64
	Seq  uint64
}

// Page is one page of documents, as the raw JSON bytes the store holds, with their
// keys when the range asked for them.
type Page struct {
	Docs [][]byte
	Keys []Key // nil unless Range.Keys
	// Matched names, for each document, the filters of SettledQuery.Filters
	// it matched; nil without them.
	Matched [][]string
}

// SettledQuery selects, in stream order, the documents created by messages
// with sequences in (After, UpTo] whose @timestamp is in [From, To): what a
// follow sends once UpTo is settled.
type SettledQuery struct {
	After, UpTo uint64
	From, To    time.Time
	Size        int      // the most documents
	Fields      []string // as in Range
	// Filters, when not empty, keeps the documents that match at least one of
	// these queries, and names those each matched in Page.Matched: one search
	// serves followers with different filters.
	Filters map[string]any
}

// CountsRequest asks how many documents of [From, To) match Filter, per
// Interval.
type CountsRequest struct {
	From, To time.Time
	Filter   any // as in Range; nil: every document
	// Interval is each bucket's length. Buckets start at whole multiples of it
	// since the Unix epoch (UTC), so the first may begin before From.
	Interval time.Duration
	// By, when set, splits each bucket by the Top values of that field over
	// the whole range. ByNested is the array of nested objects By is in, if any.
	By, ByNested string
	Top          int
}

// Counts answers a CountsRequest.
type Counts struct {
	Total   int64
	Buckets []Bucket // every bucket of the range, empty ones too, in time order
	// Values are By's top values over the range, most frequent first, with
	// their counts.
	Values []ValueCount
}

// Bucket is the count of one interval.
type Bucket struct {
	Start time.Time
	Count int64
	By    map[string]int64 // per value of Counts.Values, when split
}

// ValueCount is how many documents hold a value of a field.
type ValueCount struct {
	Value string
	Count int64
}
