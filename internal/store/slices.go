package store

import (
	"bytes"
	"context"
	"fmt"
	"strconv"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// slice is one of the parts Elasticsearch splits a point in time into for
// paging in parallel: "slice": {"id": ID, "max": Max} in each search.
type slice struct {
	ID  int `json:"id"`
	Max int `json:"max"`
}

// exportSlices is Export in r.Slices slices of one point in time, each paged by
// a fetcher of its own with its own search_after and its own page ahead, so that
// Elasticsearch fills several pages at once.
//
// Each slice pages as a single stream would, from the first page's size up to
// the page size, rather than asking for a share of it: Elasticsearch cuts a
// shard into slices by contiguous ranges of Lucene document ids, and documents
// indexed in time order then make each slice a stretch of time, which alone
// supplies the merge for a while. Smaller pages would make that slice slower
// and its first page later. So memory grows with the slices: each holds at most
// the run being merged and one page ahead, besides the page the consumer has.
//
// The slices come back in the export's sort order each, and are merged into the
// single stream's order and pages: by all the sort values a single stream sorts
// by (@timestamp, @nats.seq when r.Keys, and _shard_doc, whose values one point
// in time shares among its slices), so fn sees the same pages with the same keys
// as without slices, and a resumed export (r.After) simply starts every slice
// after the cursor.
//
// It returns the latest point in time id, the one to close, once every fetcher
// has stopped: after the range, the limit, a failure, or the caller leaving.
func (s *Store) exportSlices(ctx context.Context, r pipeline.Range, pit string, fn func(pipeline.Page) error) (string, error) {
	fetchCtx, stopFetching := context.WithCancel(ctx)
	defer stopFetching()
	feeds := make([]chan fetched, r.Slices)
	for i := range feeds {
		feeds[i] = make(chan fetched) // unbuffered: one page ahead, as a single stream
		go s.fetchPages(fetchCtx, r, pit, &slice{ID: i, Max: r.Slices}, feeds[i])
	}
	m := merger{descending: r.Order == pipeline.Descending, heads: make([]run, r.Slices), next: func(i int) (run, bool, error) {
		f, ok := <-feeds[i]
		if f.pit != "" {
			pit = f.pit
		}
		switch {
		case f.err != nil:
			return run{}, false, fmt.Errorf("slice %d of %d: %w", i, r.Slices, f.err)
		case !ok && ctx.Err() != nil:
			// A fetcher stopped by the caller leaving closes its feed as one at the
			// end of its slice does: the merge must not take it for the end.
			return run{}, false, ctx.Err()
		}
		return run{docs: f.page.Docs, keys: f.sorts}, ok, nil
	}}

	exportErr := m.pages(r, fn)
	stopFetching()
	// Every fetcher closes its feed once stopped: wait for each, and keep the
	// point in time id of the last page any of them fetched.
	for _, feed := range feeds {
		for f := range feed {
			if f.pit != "" {
				pit = f.pit
			}
		}
	}
	return pit, exportErr
}

// pages calls fn with the merged documents in the pages a single stream of r
// would have: growing from the first page's size to the page size, and ending
// at the limit.
func (m *merger) pages(r pipeline.Range, fn func(pipeline.Page) error) error {
	sizes := newPageSizes(r)
	for {
		size := sizes.size()
		page, err := m.take(size, r.Keys)
		if err != nil {
			return err
		}
		if len(page.Docs) > 0 {
			if err := fn(page); err != nil {
				return err
			}
		}
		if sizes.last(len(page.Docs), size) {
			return nil
		}
	}
}

// sortKey is a document's sort values in an export, all longs to Elasticsearch:
// its @timestamp in epoch milliseconds, then its tie-breaker: _shard_doc, or
// @nats.seq when the export asked for keys, which the point in time follows
// with _shard_doc of its own accord (a third value).
type sortKey [3]int64

// before reports whether k comes before o in ascending order, or in descending
// order when descending.
func (k sortKey) before(o sortKey, descending bool) bool {
	if descending {
		k, o = o, k
	}
	for i := range k {
		if k[i] != o[i] {
			return k[i] < o[i]
		}
	}
	return false
}

// sortKeys reads each hit's sort values. It is on the path of every document of a
// sliced export, so it parses the numbers by hand rather than through
// encoding/json, which costs several times more.
func sortKeys(hits []hit) ([]sortKey, error) {
	out := make([]sortKey, len(hits))
	for i, h := range hits {
		k, err := parseSortKey(h.Sort)
		if err != nil {
			return nil, err
		}
		out[i] = k
	}
	return out, nil
}

// parseSortKey parses sort values of the form [long,long] or [long,long,long].
func parseSortKey(raw []byte) (sortKey, error) {
	var k sortKey
	inner, ok := bytes.CutPrefix(bytes.TrimSpace(raw), []byte("["))
	inner, ok2 := bytes.CutSuffix(inner, []byte("]"))
	n := 0
	for field := range bytes.SplitSeq(inner, []byte(",")) {
		if n == len(k) || !ok || !ok2 {
			n = 0
			break
		}
		v, err := strconv.ParseInt(string(bytes.TrimSpace(field)), 10, 64)
		if err != nil {
			n = 0
			break
		}
		k[n] = v
		n++
	}
	if n < 2 {
		return sortKey{}, fmt.Errorf("search response: sort values %s are not [@timestamp, tie-breakers] whole numbers", raw)
	}
	return k, nil
}

// run is a stretch of one slice's documents in the export's order, with their
// sort keys.
type run struct {
	docs [][]byte
	keys []sortKey
}

// merger interleaves several slices, each in the export's order, into the order
// of the whole: by sort key, equal keys (which one point in time never gives)
// by slice, then in each slice's own order. It knows nothing of
// Elasticsearch: next supplies the runs.
type merger struct {
	descending bool
	// next returns slice i's next run, or false once the slice has no more.
	next func(i int) (run, bool, error)
	// heads holds what is left of each slice's current run.
	heads []run
	ended []bool // slices with no more runs; allocated on the first take
}

// take returns the next n documents in merged order (fewer only once every slice
// has ended), and their keys when withKeys.
func (m *merger) take(n int, withKeys bool) (pipeline.Page, error) {
	if m.ended == nil {
		m.ended = make([]bool, len(m.heads))
	}
	page := pipeline.Page{Docs: make([][]byte, 0, n)}
	if withKeys {
		page.Keys = make([]pipeline.Key, 0, n)
	}
	for len(page.Docs) < n {
		first := -1
		for i := range m.heads {
			if err := m.fill(i); err != nil {
				return pipeline.Page{}, err
			}
			// Strictly before: on equal keys the lower slice goes first.
			if !m.ended[i] && (first < 0 || m.heads[i].keys[0].before(m.heads[first].keys[0], m.descending)) {
				first = i
			}
		}
		if first < 0 {
			break
		}
		h := &m.heads[first]
		page.Docs = append(page.Docs, h.docs[0])
		if withKeys {
			page.Keys = append(page.Keys, pipeline.Key{Time: h.keys[0][0], Seq: uint64(h.keys[0][1])})
		}
		h.docs, h.keys = h.docs[1:], h.keys[1:]
	}
	return page, nil
}

// fill gives slice i a document at its head, unless it has ended; empty runs
// are passed over.
func (m *merger) fill(i int) error {
	for !m.ended[i] && len(m.heads[i].docs) == 0 {
		r, ok, err := m.next(i)
		if err != nil {
			return err
		}
		if len(r.keys) != len(r.docs) {
			return fmt.Errorf("slice %d: %d sort keys for %d documents", i, len(r.keys), len(r.docs))
		}
		m.heads[i], m.ended[i] = r, !ok
	}
	return nil
}
