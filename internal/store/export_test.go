//go:build integration

package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// exportFixture indexes 30 documents, three per timestamp one second apart from
// 2023-03-09T12:00:00Z, so that ties straddle small pages.
func exportFixture(t *testing.T, observe store.QueryObserver) (*store.Store, pipeline.Range) {
	t.Helper()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	start := time.Date(2023, 3, 9, 12, 0, 0, 0, time.UTC)
	testenv.IndexDocuments(t, esURL, prefix, 30, func(i int) pipeline.Item {
		ts := start.Add(time.Duration(i/3) * time.Second)
		id := fmt.Sprintf("d%02d", i)
		return pipeline.Item{ID: id, Timestamp: ts, Body: testenv.DocumentBody(id, ts, "cam-1")}
	})
	st, err := store.New(store.Config{Addresses: []string{esURL}, IndexPrefix: prefix, Observe: observe})
	if err != nil {
		t.Fatal(err)
	}
	return st, pipeline.Range{From: start, To: start.Add(time.Hour), PageSize: 4}
}

type exported struct {
	ID        string    `json:"id"`
	Timestamp time.Time `json:"@timestamp"`
}

// export runs an export and returns its documents and the size of each page.
func export(t *testing.T, st *store.Store, r pipeline.Range) ([]exported, []int) {
	t.Helper()
	var docs []exported
	var sizes []int
	err := st.Export(context.Background(), r, func(p pipeline.Page) error {
		sizes = append(sizes, len(p.Docs))
		for _, raw := range p.Docs {
			var d exported
			if err := json.Unmarshal(raw, &d); err != nil {
				return err
			}
			docs = append(docs, d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return docs, sizes
}

func checkOrder(t *testing.T, docs []exported, desc bool) {
	t.Helper()
	seen := map[string]bool{}
	for i, d := range docs {
		if seen[d.ID] {
			t.Fatalf("%s came twice", d.ID)
		}
		seen[d.ID] = true
		if i > 0 && (!desc && d.Timestamp.Before(docs[i-1].Timestamp) || desc && d.Timestamp.After(docs[i-1].Timestamp)) {
			t.Fatalf("%s at %s is out of order after %s at %s", d.ID, d.Timestamp, docs[i-1].ID, docs[i-1].Timestamp)
		}
	}
}

func TestExportWalksPagesInOrderThroughTies(t *testing.T) {
	st, r := exportFixture(t, nil)
	for _, order := range []pipeline.Order{pipeline.Ascending, pipeline.Descending} {
		r.Order = order
		docs, sizes := export(t, st, r)
		if len(docs) != 30 {
			t.Fatalf("order %d: %d documents, want 30", order, len(docs))
		}
		checkOrder(t, docs, order == pipeline.Descending)
		// Seven full pages and a short last one: no empty search at the end.
		if want := []int{4, 4, 4, 4, 4, 4, 4, 2}; !slices.Equal(sizes, want) {
			t.Errorf("order %d: page sizes %v, want %v", order, sizes, want)
		}
	}
}

func TestExportGrowsPagesFromTheFirstPageSizeToThePageSize(t *testing.T) {
	st, r := exportFixture(t, nil)
	r.FirstPageSize, r.PageSize = 2, 8
	for _, keys := range []bool{false, true} {
		for _, order := range []pipeline.Order{pipeline.Ascending, pipeline.Descending} {
			r.Order, r.Keys = order, keys
			docs, sizes := export(t, st, r)
			if len(docs) != 30 {
				t.Fatalf("keys %t, order %d: %d documents, want 30", keys, order, len(docs))
			}
			checkOrder(t, docs, order == pipeline.Descending)
			if want := []int{2, 4, 8, 8, 8}; !slices.Equal(sizes, want) {
				t.Errorf("keys %t, order %d: page sizes %v, want %v", keys, order, sizes, want)
			}
		}
	}
	// A limit cuts the growing pages as it cuts full ones.
	r.Order, r.Keys, r.Limit = pipeline.Ascending, false, 11
	if _, sizes := export(t, st, r); !slices.Equal(sizes, []int{2, 4, 5}) {
		t.Errorf("limit 11: page sizes %v, want [2 4 5]", sizes)
	}
}

func TestExportResumedAfterAKeyStillGrowsItsPages(t *testing.T) {
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	start := time.Date(2023, 3, 9, 12, 0, 0, 0, time.UTC)
	// Three documents per timestamp, each with its own sequence, as the webserver
	// stores them: every key is unique.
	testenv.IndexDocuments(t, esURL, prefix, 30, func(i int) pipeline.Item {
		ts := start.Add(time.Duration(i/3) * time.Second)
		id := fmt.Sprintf("d%02d", i)
		return pipeline.Item{ID: id, Timestamp: ts, Body: fmt.Appendf(nil, `{"@timestamp":%q,"id":%q,"@nats":{"seq":%d}}`, ts.Format(time.RFC3339), id, i+1)}
	})
	st, err := store.New(store.Config{Addresses: []string{esURL}, IndexPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	r := pipeline.Range{From: start, To: start.Add(time.Hour), FirstPageSize: 2, PageSize: 8, Keys: true}
	r.After = &pipeline.Key{Time: start.Add(3 * time.Second).UnixMilli(), Seq: 10}
	docs, sizes := export(t, st, r)
	if !slices.Equal(sizes, []int{2, 4, 8, 6}) {
		t.Errorf("page sizes %v, want [2 4 8 6]", sizes)
	}
	for i, d := range docs {
		if want := fmt.Sprintf("d%02d", 10+i); d.ID != want {
			t.Fatalf("document %d is %s, want %s", i, d.ID, want)
		}
	}
	if len(docs) != 20 {
		t.Errorf("resumed with %d documents, want 20", len(docs))
	}
}

func TestExportStopsAtTheLimitEvenMidPage(t *testing.T) {
	st, r := exportFixture(t, nil)
	r.Limit, r.Order = 10, pipeline.Descending
	docs, sizes := export(t, st, r)
	if !slices.Equal(sizes, []int{4, 4, 2}) {
		t.Errorf("page sizes %v, want [4 4 2]", sizes)
	}
	checkOrder(t, docs, true)
	// The newest ten: the last three timestamps whole, and one of the fourth-last.
	newest := time.Date(2023, 3, 9, 12, 0, 9, 0, time.UTC)
	for i, d := range docs {
		if want := newest.Add(-time.Duration(i/3) * time.Second); !d.Timestamp.Equal(want) {
			t.Errorf("document %d at %s, want %s", i, d.Timestamp, want)
		}
	}
}

func TestExportReturnsOnlyTheRequestedFields(t *testing.T) {
	st, r := exportFixture(t, nil)
	r.Limit, r.Fields = 1, []string{"id", "objects.label"}
	err := st.Export(context.Background(), r, func(p pipeline.Page) error {
		if got, want := string(p.Docs[0]), `{"objects":[{"label":"person"},{"label":"car"}],"id":"d00"}`; got != want {
			var a, b any
			json.Unmarshal([]byte(got), &a)
			json.Unmarshal([]byte(want), &b)
			if fmt.Sprint(a) != fmt.Sprint(b) {
				t.Errorf("document = %s, want %s", got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestExportStopsWhenTheConsumerFailsAndStillClosesItsPointInTime(t *testing.T) {
	var log opLog
	st, r := exportFixture(t, log.observe)
	exportFailingAt(t, st, r, 2)
	ops := log.list()
	if len(ops) < 3 || ops[0] != "open_pit" || ops[len(ops)-1] != "close_pit" {
		t.Errorf("requests %v, want open_pit, searches, close_pit", ops)
	}
	// One page ahead at most: the third page may have been fetched, not more.
	if searches := countOf(ops, "search") + countOf(ops, "search failed"); searches > 3 {
		t.Errorf("%d searches for a consumer that stopped at the second page, want at most 3", searches)
	}
}

// slicesFixture indexes 90 documents, three per timestamp two hours apart from
// 2023-03-09T16:00:00Z, so that ties straddle small pages and the range spans
// four daily indices. Sequences are shuffled against the ids (7i mod 90 + 1), so
// that ordering by @nats.seq within a tie is not the order of indexing.
func slicesFixture(t *testing.T, observe store.QueryObserver) (*store.Store, pipeline.Range, string) {
	t.Helper()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	start := time.Date(2023, 3, 9, 16, 0, 0, 0, time.UTC)
	testenv.IndexDocuments(t, esURL, prefix, 90, func(i int) pipeline.Item {
		ts := start.Add(time.Duration(i/3) * 2 * time.Hour)
		id := fmt.Sprintf("d%02d", i)
		return pipeline.Item{ID: id, Timestamp: ts, Body: fmt.Appendf(nil, `{"@timestamp":%q,"id":%q,"@nats":{"seq":%d}}`, ts.Format(time.RFC3339), id, 7*i%90+1)}
	})
	st, err := store.New(store.Config{Addresses: []string{esURL}, IndexPrefix: prefix, Observe: observe})
	if err != nil {
		t.Fatal(err)
	}
	return st, pipeline.Range{From: start, To: start.Add(72 * time.Hour), FirstPageSize: 2, PageSize: 8}, esURL + "/" + prefix + "-*"
}

// pages is everything an export handed its consumer, page by page.
type pages struct {
	docs  [][]string
	keys  [][]pipeline.Key
	count int
}

func exportPages(t *testing.T, st *store.Store, r pipeline.Range) pages {
	t.Helper()
	var got pages
	err := st.Export(context.Background(), r, func(p pipeline.Page) error {
		var docs []string
		for _, d := range p.Docs {
			docs = append(docs, string(d))
		}
		got.docs = append(got.docs, docs)
		got.keys = append(got.keys, p.Keys)
		got.count += len(docs)
		return nil
	})
	if err != nil {
		t.Fatalf("export %+v: %v", r, err)
	}
	return got
}

func TestASlicedExportHandsOverTheSinglestreamsPagesExactly(t *testing.T) {
	st, base, _ := slicesFixture(t, nil)
	upTo := uint64(45)
	variants := []struct {
		name   string
		keys   bool
		change func(*pipeline.Range)
		count  int
	}{
		{"whole range", false, func(*pipeline.Range) {}, 90},
		{"whole range with keys", true, func(*pipeline.Range) {}, 90},
		{"limit", false, func(r *pipeline.Range) { r.Limit = 17 }, 17},
		{"limit with keys", true, func(r *pipeline.Range) { r.Limit = 17 }, 17},
		{"limit beyond the range", false, func(r *pipeline.Range) { r.Limit = 1000 }, 90},
		{"up to a sequence", true, func(r *pipeline.Range) { r.UpTo = &upTo }, 45},
		{"a range within one day", false, func(r *pipeline.Range) { r.To = r.From.Add(7 * time.Hour) }, 12},
		{"one page", false, func(r *pipeline.Range) { r.FirstPageSize, r.PageSize = 0, 100 }, 90},
	}
	for _, v := range variants {
		for _, order := range []pipeline.Order{pipeline.Ascending, pipeline.Descending} {
			r := base
			r.Order, r.Keys = order, v.keys
			v.change(&r)
			want := exportPages(t, st, r)
			if want.count != v.count {
				t.Fatalf("%s, order %d: the single stream gave %d documents, want %d", v.name, order, want.count, v.count)
			}
			for _, n := range []int{2, 3} {
				r.Slices = n
				if got := exportPages(t, st, r); !reflect.DeepEqual(got, want) {
					t.Errorf("%s, order %d, %d slices:\n got %v\nwant %v", v.name, order, n, got, want)
				}
			}
		}
	}
}

func TestASlicedExportResumesAfterTheSameKey(t *testing.T) {
	st, r, _ := slicesFixture(t, nil)
	r.Keys = true
	for _, order := range []pipeline.Order{pipeline.Ascending, pipeline.Descending} {
		r.Order, r.After = order, nil
		whole := exportPages(t, st, r)
		// Resume after the 40th document, the middle one of its tie.
		r.After = &slices.Concat(whole.keys...)[40]
		want := exportPages(t, st, r)
		if want.count != 49 {
			t.Fatalf("order %d: resumed with %d documents, want 49", order, want.count)
		}
		for _, n := range []int{2, 3} {
			r.Slices = n
			if got := exportPages(t, st, r); !reflect.DeepEqual(got, want) {
				t.Errorf("order %d, %d slices:\n got %v\nwant %v", order, n, got, want)
			}
		}
		r.Slices = 0
	}
}

func TestASlicedExportThatStopsMidwayClosesItsPointInTime(t *testing.T) {
	var log opLog
	st, r, indices := slicesFixture(t, log.observe)
	r.Slices = 3
	exportFailingAt(t, st, r, 2)
	if ops := log.list(); ops[0] != "open_pit" || ops[len(ops)-1] != "close_pit" || countOf(ops, "open_pit") != 1 || countOf(ops, "close_pit") != 1 {
		t.Errorf("requests %v, want one open_pit, searches, one close_pit", ops)
	}
	if n := testenv.OpenSearchContexts(t, indices); n != 0 {
		t.Errorf("%d search contexts open after the export returned, want 0", n)
	}

	// The caller leaving stops every slice as well.
	ctx, cancel := context.WithCancel(context.Background())
	err := st.Export(ctx, r, func(pipeline.Page) error {
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Export after the caller left = %v, want context.Canceled", err)
	}
	if n := testenv.OpenSearchContexts(t, indices); n != 0 {
		t.Errorf("%d search contexts open after the cancelled export returned, want 0", n)
	}
}

// opLog records the requests an export makes, as its QueryObserver: each op,
// with " failed" after it when it failed.
type opLog struct {
	mu  sync.Mutex
	ops []string
}

func (l *opLog) observe(op string, _ time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		op += " failed"
	}
	l.ops = append(l.ops, op)
}

func (l *opLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ops)
}

// exportFailingAt exports r to a consumer that fails at page n, and checks that
// Export stops there with the consumer's error.
func exportFailingAt(t *testing.T, st *store.Store, r pipeline.Range, n int) {
	t.Helper()
	errClientGone := errors.New("client gone")
	pages := 0
	err := st.Export(context.Background(), r, func(pipeline.Page) error {
		pages++
		if pages == n {
			return errClientGone
		}
		return nil
	})
	if !errors.Is(err, errClientGone) || pages != n {
		t.Errorf("Export = %v after %d pages, want the consumer's error after %d", err, pages, n)
	}
}

func countOf(ops []string, op string) int {
	n := 0
	for _, o := range ops {
		if o == op {
			n++
		}
	}
	return n
}

func TestASlicedExportStoppedAtTheLimitReportsNoFailedSearch(t *testing.T) {
	var mu sync.Mutex
	var failed []string
	st, r, _ := slicesFixture(t, func(op string, _ time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", op, err))
		}
	})
	// The other slices still have searches in flight when the limit is reached:
	// calling them off is not Elasticsearch failing.
	r.Slices, r.Limit, r.FirstPageSize = 3, 5, 6
	for range 5 {
		if got := exportPages(t, st, r); got.count != 5 {
			t.Fatalf("%d documents, want 5", got.count)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failed) > 0 {
		t.Errorf("failed requests reported: %q", failed)
	}
}
