package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/annotated-data/pipeline/internal/document"
	"github.com/annotated-data/pipeline/internal/pipeline"
)

// QueryObserver is told the outcome of every Elasticsearch request an export makes:
// op is "open_pit", "search" or "close_pit".
type QueryObserver func(op string, took time.Duration, err error)

// pitKeepAlive is how long Elasticsearch keeps a point in time after each request
// that names it: the longest an export may pause between two pages, which is the
// time its client takes to read one. A steady reader at 150 KB/s takes 66 s for
// a page of 10,000 documents of 1 KB, and one at the backend's minimum rate far
// longer; ten minutes covers 90 MB a page at 150 KB/s. A longer keep-alive costs
// nothing while the backend runs, since every export closes its point in time; it
// only keeps the contexts of a crashed backend open for longer.
const pitKeepAlive = "10m"

// fetched is one page on its way from a fetching goroutine to the caller.
type fetched struct {
	page  pipeline.Page
	sorts []sortKey // each document's sort values, for merging slices; nil otherwise
	pit   string    // the point in time id as of this page
	err   error
}

// Export calls fn with each page of documents in the range, in r.Order: the
// first of r.FirstPageSize documents (if set), each next one twice as large, up
// to r.PageSize. It pages through a point in time with search_after (sorted by
// @timestamp, tie-broken by _shard_doc, or by @nats.seq when r.Keys), so a range
// of any size is read with memory bounded by two pages, and documents indexed
// meanwhile do not shift pages.
//
// The next page is fetched while fn handles the current one, so Elasticsearch and
// the consumer (usually a network client) work at the same time instead of taking
// turns. With r.Slices above 1, that many slices of the point in time are paged
// at once and merged back into the same order and the same pages, holding up to
// two pages per slice besides fn's (see exportSlices). The point in time is
// closed when Export returns, however it returns.
func (s *Store) Export(ctx context.Context, r pipeline.Range, fn func(pipeline.Page) error) error {
	if r.PageSize <= 0 {
		return fmt.Errorf("export: page size must be positive, got %d", r.PageSize)
	}
	pit, err := s.openPIT(ctx)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		// The caller left while the point in time was being opened.
		s.closePIT(ctx, pit)
		return err
	}
	var exportErr error
	if r.Slices > 1 {
		pit, exportErr = s.exportSlices(ctx, r, pit, fn)
	} else {
		pit, exportErr = s.exportStream(ctx, r, pit, fn)
	}
	// The caller's context may already be cancelled (a client that went away): the
	// point in time must still be released.
	s.closePIT(ctx, pit)
	return exportErr
}

// exportStream is Export in one stream. It returns the latest point in time id,
// the one to close, once its fetcher has stopped.
func (s *Store) exportStream(ctx context.Context, r pipeline.Range, pit string, fn func(pipeline.Page) error) (string, error) {
	fetchCtx, stopFetching := context.WithCancel(ctx)
	defer stopFetching()
	// Unbuffered: the fetcher holds the next page until the consumer is done with
	// the current one, so an export holds two pages at most.
	pages := make(chan fetched)
	go s.fetchPages(fetchCtx, r, pit, nil, pages)

	var exportErr error
	for f := range pages { // the fetcher always closes pages, so this loop also waits for it
		if f.pit != "" {
			pit = f.pit
		}
		switch {
		case exportErr != nil: // draining after a failure
		case f.err != nil:
			exportErr = f.err
		case len(f.page.Docs) > 0:
			if err := fn(f.page); err != nil {
				exportErr = err
				stopFetching()
			}
		}
	}
	return pit, exportErr
}

// pageSizes hands out the sizes of an export's pages: the first page's, each
// next one twice as large up to the page size, none beyond what remains of the
// limit.
type pageSizes struct {
	next, max int
	left      int // documents still wanted; negative: no limit
}

// newPageSizes starts the sizes of r's pages.
func newPageSizes(r pipeline.Range) pageSizes {
	p := pageSizes{next: r.PageSize, max: r.PageSize, left: -1}
	if r.FirstPageSize > 0 {
		p.next = min(r.FirstPageSize, r.PageSize)
	}
	if r.Limit > 0 {
		p.left = r.Limit
	}
	return p
}

// size is how many documents to ask for next.
func (p *pageSizes) size() int {
	if p.left >= 0 {
		return min(p.next, p.left)
	}
	return p.next
}

// last records a page of got documents out of asked, and reports whether it was
// the last one: a short page ends the range (no need for one more empty search),
// and so does reaching the limit.
func (p *pageSizes) last(got, asked int) bool {
	if p.left >= 0 {
		p.left -= got
	}
	p.next = min(2*p.next, p.max)
	return got < asked || p.left == 0
}

// fetchPages sends the pages of r to out, one ahead of the consumer, and closes out
// when the range is exhausted, the limit reached, a request failed or ctx ended.
// With part, it pages through that slice of the point in time only, with the
// documents' sort values.
func (s *Store) fetchPages(ctx context.Context, r pipeline.Range, pit string, part *slice, out chan<- fetched) {
	defer close(out)
	var after json.RawMessage
	sizes := newPageSizes(r)
	for {
		size := sizes.size()
		f, last, err := s.searchPage(ctx, r, part, size, pit, after)
		if err != nil {
			out <- fetched{err: err}
			return
		}
		pit = f.pit
		select {
		case out <- f:
		case <-ctx.Done():
			return
		}
		if sizes.last(len(f.page.Docs), size) {
			return
		}
		after = last
	}
}

type searchRequest struct {
	Size           int             `json:"size"`
	Query          any             `json:"query"`
	Sort           []any           `json:"sort"`
	Source         any             `json:"_source,omitempty"`
	PIT            *pitRef         `json:"pit,omitempty"`
	SearchAfter    json.RawMessage `json:"search_after,omitempty"`
	Slice          *slice          `json:"slice,omitempty"`
	TrackTotalHits bool            `json:"track_total_hits"`
}

type pitRef struct {
	ID        string `json:"id"`
	KeepAlive string `json:"keep_alive"`
}

// seqField is where a document keeps the stream sequence of its message.
const seqField = "@nats.seq"

// newSearchRequest builds the body of one page's search. Every value from the
// caller travels as a typed JSON value, never as query text.
func newSearchRequest(r pipeline.Range, part *slice, size int, pit string, after json.RawMessage) searchRequest {
	dir := "asc"
	if r.Order == pipeline.Descending {
		dir = "desc"
	}
	filter := rangeFilter(r.From, r.To, r.Filter)
	if r.UpTo != nil {
		// A document without a sequence (the old system's, or one indexed by hand)
		// came from no message: no floor will ever be settled past it, so it belongs
		// to the history, or a follow would never send it.
		filter = append(filter, object{"bool": object{"minimum_should_match": 1, "should": []any{
			object{"range": object{seqField: object{"lte": *r.UpTo}}},
			object{"bool": object{"must_not": object{"exists": object{"field": seqField}}}},
		}}})
	}
	// Without keys, _shard_doc breaks ties: the cheapest order, but one that only
	// holds within this point in time.
	sort := []any{object{"@timestamp": dir}, object{"_shard_doc": dir}}
	if r.Keys {
		sort = []any{object{"@timestamp": dir}, bySeq(dir)}
		if after == nil && r.After != nil {
			// As the long it was read from: a document without a sequence has
			// Long.MIN_VALUE in a descending export, which as a uint64 is beyond
			// any long, and Elasticsearch would not continue after it.
			after, _ = json.Marshal([]any{r.After.Time, int64(r.After.Seq)})
		}
	}
	req := searchRequest{
		Size:           size,
		Query:          object{"bool": object{"filter": filter}},
		Sort:           sort,
		PIT:            &pitRef{ID: pit, KeepAlive: pitKeepAlive},
		SearchAfter:    after,
		Slice:          part,
		TrackTotalHits: false,
	}
	req.Source = sourceFilter(r.Fields)
	return req
}

// sourceFilter is the _source filter that returns fields, or nil for whole
// documents. It also asks for the members set aside under document.AsideKey, so
// that documents can be restored (see sources) whichever fields they were in.
func sourceFilter(fields []string) any {
	if len(fields) == 0 {
		return nil
	}
	return object{"includes": append(slices.Clip(fields), document.AsideKey)}
}

// sources are the documents of hits as their messages were published: every
// read of documents goes through it.
func sources(hits []hit, fields []string) [][]byte {
	docs := make([][]byte, len(hits))
	for i, h := range hits {
		docs[i] = document.Restore(h.Source, fields)
	}
	return docs
}

// bySeq sorts by @nats.seq in dir. Indices without the field's mapping (the old
// system's, or ones created by hand or restored) would otherwise fail the whole
// search with "No mapping found for [@nats.seq]"; with unmapped_type their
// documents sort as documents without a sequence do in the pipeline's indices:
// last among those of their @timestamp, in either order.
func bySeq(dir string) object {
	return object{seqField: object{"order": dir, "unmapped_type": "long"}}
}

// rangeFilter selects the documents of [from, to) that match query (nil: all).
func rangeFilter(from, to time.Time, query any) []any {
	if query == nil {
		return []any{timeRange(from, to)}
	}
	return []any{timeRange(from, to), query}
}

func timeRange(from, to time.Time) object {
	return object{"range": object{"@timestamp": object{
		"gte":    from.UTC().Format(time.RFC3339Nano),
		"lt":     to.UTC().Format(time.RFC3339Nano),
		"format": "strict_date_optional_time_nanos",
	}}}
}

// hit is one document of a search response: its source and its sort values.
type hit struct {
	Source  json.RawMessage `json:"_source"`
	Sort    json.RawMessage `json:"sort"`
	Matched []string        `json:"matched_queries"` // the named queries it matched
}

// searchPage fetches one page of r (of its slice part, when not nil) and returns
// it with the sort values of its last document, to continue after.
func (s *Store) searchPage(ctx context.Context, r pipeline.Range, part *slice, size int, pit string, after json.RawMessage) (f fetched, last json.RawMessage, err error) {
	parsed, err := s.search(ctx, newSearchRequest(r, part, size, pit, after))
	if err != nil {
		return fetched{}, nil, err
	}
	hits := parsed.Hits.Hits
	f.page.Docs = sources(hits, r.Fields)
	switch {
	case part != nil:
		// Merging needs every document's sort values; its keys come from them.
		if f.sorts, err = sortKeys(hits); err != nil {
			return fetched{}, nil, err
		}
	case r.Keys:
		// Sorted by @timestamp, then @nats.seq.
		if f.page.Keys, err = keys(hits, 0, 1); err != nil {
			return fetched{}, nil, err
		}
	}
	if len(hits) > 0 {
		last = hits[len(hits)-1].Sort
	}
	f.pit = cmp.Or(parsed.PITID, pit)
	return f, last, nil
}

type searchResponse struct {
	PITID  string       `json:"pit_id"`
	Shards shardsAnswer `json:"_shards"`
	Hits   struct {
		Hits []hit `json:"hits"`
	} `json:"hits"`
}

// search runs one search over the store's indices.
func (s *Store) search(ctx context.Context, req searchRequest) (parsed searchResponse, err error) {
	body, err := json.Marshal(req)
	if err != nil {
		return parsed, fmt.Errorf("encode search: %w", err)
	}
	start := time.Now()
	defer func() {
		// A search its export called off (the consumer left, or in a sliced
		// export another slice reached the limit) says nothing of Elasticsearch.
		if err == nil || ctx.Err() == nil {
			s.observed("search", start, err)
		}
	}()
	opts := []func(*esapi.SearchRequest){
		s.es.Search.WithContext(ctx),
		s.es.Search.WithBody(bytes.NewReader(body)),
		// A page with a shard missing would silently drop documents: fail instead.
		s.es.Search.WithAllowPartialSearchResults(false),
		// Only what the export uses: drops _index, _id and _score from every hit.
		s.es.Search.WithFilterPath("pit_id", "hits.hits._source", "hits.hits.sort", "hits.hits.matched_queries", "_shards.total", "_shards.failed", "_shards.failures"),
	}
	if req.PIT == nil {
		// A point in time names its indices; a plain search must.
		opts = append(opts, s.es.Search.WithIndex(s.pattern()), s.es.Search.WithIgnoreUnavailable(true), s.es.Search.WithAllowNoIndices(true))
	}
	res, err := s.es.Search(opts...)
	if err != nil {
		return parsed, fmt.Errorf("search %s: %w", s.pattern(), err)
	}
	defer drain(res)
	if res.IsError() {
		return parsed, fmt.Errorf("search %s: %w", s.pattern(), responseError(res))
	}
	if err := json.NewDecoder(res.Body).Decode(&parsed); err != nil {
		return parsed, fmt.Errorf("decode search response: %w", err)
	}
	if err := parsed.Shards.err(); err != nil {
		return parsed, fmt.Errorf("search %s: %w", s.pattern(), err)
	}
	return parsed, nil
}

// keys reads each hit's Key from its sort values: the time at index ti, the
// sequence at index si. A document without @nats.seq sorts with Long.MAX_VALUE
// (ascending) or Long.MIN_VALUE, which still orders it and continues after it.
func keys(hits []hit, ti, si int) ([]pipeline.Key, error) {
	out := make([]pipeline.Key, len(hits))
	for i, h := range hits {
		var v []int64
		if err := json.Unmarshal(h.Sort, &v); err != nil || len(v) <= max(ti, si) {
			return nil, fmt.Errorf("search response: sort values %s are not [@timestamp, @nats.seq] numbers", h.Sort)
		}
		out[i] = pipeline.Key{Time: v[ti], Seq: uint64(v[si])}
	}
	return out, nil
}

// openPIT opens a point in time. The request is not cancelled with ctx: a request
// cut while Elasticsearch opens the point in time would leave it open, unknown to
// anyone, until its keep-alive ran out. Export closes it instead.
func (s *Store) openPIT(ctx context.Context) (id string, err error) {
	start := time.Now()
	defer func() { s.observed("open_pit", start, err) }()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.PITTimeout)
	defer cancel()
	res, err := s.es.OpenPointInTime([]string{s.pattern()}, pitKeepAlive, s.es.OpenPointInTime.WithContext(ctx),
		// Elasticsearch's default, said here: a point in time without some shards
		// would make every page of the export partial.
		s.es.OpenPointInTime.WithAllowPartialSearchResults(false))
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			// Only the timeout can end ctx: the cluster is slow, and saying it is
			// unreachable would send the operator looking in the wrong place.
			err = &TimeoutError{Op: "open point in time", After: s.cfg.PITTimeout, Err: err}
		}
		return "", fmt.Errorf("open point in time on %s: %w", s.pattern(), err)
	}
	defer drain(res)
	if res.IsError() {
		return "", fmt.Errorf("open point in time on %s: %w", s.pattern(), responseError(res))
	}
	var parsed struct {
		ID     string       `json:"id"`
		Shards shardsAnswer `json:"_shards"`
	}
	if err := json.NewDecoder(res.Body).Decode(&parsed); err != nil {
		return "", fmt.Errorf("decode point in time: %w", err)
	}
	if err := parsed.Shards.err(); err != nil {
		s.closePIT(ctx, parsed.ID)
		return "", fmt.Errorf("open point in time on %s: %w", s.pattern(), err)
	}
	return parsed.ID, nil
}

// closePIT releases a point in time, also when ctx is cancelled (a client that went
// away). One that could not be closed expires after its keep-alive, so a failure
// here is only reported to the observer.
func (s *Store) closePIT(ctx context.Context, id string) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.PITTimeout)
	defer cancel()
	body, _ := json.Marshal(object{"id": id})
	res, err := s.es.ClosePointInTime(s.es.ClosePointInTime.WithContext(ctx), s.es.ClosePointInTime.WithBody(bytes.NewReader(body)))
	if err == nil {
		if res.IsError() {
			err = responseError(res)
		}
		drain(res)
	}
	s.observed("close_pit", start, err)
}

func (s *Store) observed(op string, start time.Time, err error) {
	if s.cfg.Observe != nil {
		s.cfg.Observe(op, time.Since(start), err)
	}
}
