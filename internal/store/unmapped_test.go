//go:build integration

package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// mixedFixture makes the indices of a pipeline that took over from an older
// system: <prefix>-2023.03.08, created by hand before the index template, maps
// @timestamp only and holds o1, o2 and o3 without @nats; the pipeline's own
// <prefix>-2023.03.09 holds n1, n2 and n3 with sequences 1 to 3. The
// timestamps interleave, and o2 ties with n2:
//
//	o1 23:59:59 (the day before)  n1 00:00:00 #1  n2 00:00:01 #2  o2 00:00:01  n3 00:00:02 #3  o3 00:00:02.5
func mixedFixture(t *testing.T) (*store.Store, pipeline.Range) {
	t.Helper()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	day := time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC)

	old := prefix + "-2023.03.08"
	testenv.ESJSON(t, http.MethodPut, esURL+"/"+old, []byte(`{"settings":{"number_of_replicas":0},"mappings":{"properties":{"@timestamp":{"type":"date"}}}}`), nil)
	var bulk bytes.Buffer
	for _, d := range []struct {
		id string
		at time.Duration
	}{{"o1", -time.Second}, {"o2", time.Second}, {"o3", 2500 * time.Millisecond}} {
		fmt.Fprintf(&bulk, "{\"create\":{\"_index\":%q,\"_id\":%q}}\n{\"@timestamp\":%q,\"id\":%q}\n",
			old, d.id, day.Add(d.at).Format(time.RFC3339Nano), d.id)
	}
	testenv.ESJSON(t, http.MethodPost, esURL+"/_bulk?refresh=true", bulk.Bytes(), nil)

	testenv.IndexDocuments(t, esURL, prefix, 3, func(i int) pipeline.Item {
		ts, id := day.Add(time.Duration(i)*time.Second), fmt.Sprintf("n%d", i+1)
		body := fmt.Appendf(nil, `{"@timestamp":%q,"id":%q,"@nats":{"stream":"ANNOTATIONS","seq":%d}}`, ts.Format(time.RFC3339Nano), id, i+1)
		return pipeline.Item{ID: id, Timestamp: ts, Body: body}
	})
	st, err := store.New(store.Config{Addresses: []string{esURL}, IndexPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return st, pipeline.Range{From: day.Add(-time.Hour), To: day.Add(time.Hour), PageSize: 2, Keys: true}
}

// keyedExport returns the ids of r's documents and their keys.
func keyedExport(t *testing.T, st *store.Store, r pipeline.Range) ([]string, []pipeline.Key) {
	t.Helper()
	var ids []string
	var keys []pipeline.Key
	err := st.Export(context.Background(), r, func(p pipeline.Page) error {
		for _, raw := range p.Docs {
			var d exported
			if err := json.Unmarshal(raw, &d); err != nil {
				return err
			}
			ids = append(ids, d.ID)
		}
		keys = append(keys, p.Keys...)
		return nil
	})
	if err != nil {
		t.Fatalf("export %+v: %v", r, err)
	}
	return ids, keys
}

// A keyed export (SSE, follow, resume) sorts on @nats.seq; an index without
// that mapping must take part, its documents last among those of their
// millisecond, in either order, single-stream and sliced.
func TestKeyedExportReadsIndicesWithoutASeqMapping(t *testing.T) {
	st, r := mixedFixture(t)
	noSeqAsc, noSeqDesc := uint64(math.MaxInt64), uint64(1)<<63 // Long.MAX_VALUE; Long.MIN_VALUE as a uint64
	tests := []struct {
		order pipeline.Order
		ids   []string
		seqs  []uint64
	}{
		{pipeline.Ascending, []string{"o1", "n1", "n2", "o2", "n3", "o3"}, []uint64{noSeqAsc, 1, 2, noSeqAsc, 3, noSeqAsc}},
		{pipeline.Descending, []string{"o3", "n3", "n2", "o2", "n1", "o1"}, []uint64{noSeqDesc, 3, 2, noSeqDesc, 1, noSeqDesc}},
	}
	for _, tt := range tests {
		for _, n := range []int{1, 2} {
			r.Order, r.Slices = tt.order, n
			ids, keys := keyedExport(t, st, r)
			var seqs []uint64
			for _, k := range keys {
				seqs = append(seqs, k.Seq)
			}
			if !slices.Equal(ids, tt.ids) || !slices.Equal(seqs, tt.seqs) {
				t.Errorf("order %d, %d slices: %v with sequences %v, want %v with %v", tt.order, n, ids, seqs, tt.ids, tt.seqs)
			}
		}
	}
}

// Resuming after any document, one without a sequence included, continues
// with exactly the documents after it.
func TestAResumeAfterADocumentWithoutASequenceContinuesRightAfterIt(t *testing.T) {
	st, r := mixedFixture(t)
	for _, order := range []pipeline.Order{pipeline.Ascending, pipeline.Descending} {
		r.Order, r.After = order, nil
		all, keys := keyedExport(t, st, r)
		for i := range keys {
			r.After = &keys[i]
			if rest, _ := keyedExport(t, st, r); !slices.Equal(rest, all[i+1:]) {
				t.Errorf("order %d, after %s %+v: %v, want %v", order, all[i], keys[i], rest, all[i+1:])
			}
		}
	}
}

// A follow's history stops at the ack floor; documents without a sequence came
// from no message, so no floor ever passes them: they are history too.
func TestAFollowsHistoryHoldsTheDocumentsWithoutASequence(t *testing.T) {
	st, r := mixedFixture(t)
	floor := uint64(2)
	r.UpTo = &floor
	if ids, _ := keyedExport(t, st, r); !slices.Equal(ids, []string{"o1", "n1", "n2", "o2", "o3"}) {
		t.Errorf("history up to #2: %v, want [o1 n1 n2 o2 o3]", ids)
	}
}

// The live part of a follow searches by sequence over every index, the old
// ones included.
func TestSettledReadsAcrossIndicesWithoutASeqMapping(t *testing.T) {
	st, r := mixedFixture(t)
	page, err := st.Settled(context.Background(), pipeline.SettledQuery{After: 1, UpTo: 3, From: r.From, To: r.To, Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, raw := range page.Docs {
		var d exported
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	if !slices.Equal(ids, []string{"n2", "n3"}) || len(page.Keys) != 2 || page.Keys[0].Seq != 2 || page.Keys[1].Seq != 3 {
		t.Errorf("settled (1, 3]: %v %+v, want [n2 n3] with sequences 2 and 3", ids, page.Keys)
	}
}

// On a real node, a red index among the prefix's fails every read, rather than
// answer for the shards that are left.
func TestReadsFailWhileAnIndexOfThePrefixIsRed(t *testing.T) {
	st, r := mixedFixture(t)
	esURL := testenv.ElasticsearchURL(t)
	heal := testenv.RedIndex(t, esURL, st.IndexName(time.Date(2023, 3, 10, 0, 0, 0, 0, time.UTC)))
	exportErr := st.Export(context.Background(), r, func(pipeline.Page) error { return nil })
	_, settledErr := st.Settled(context.Background(), pipeline.SettledQuery{UpTo: 3, From: r.From, To: r.To, Size: 10})
	_, countErr := st.SeqCounts(context.Background(), "ANNOTATIONS", []pipeline.SeqRange{{From: 1, To: 3}})
	heal()
	for name, err := range map[string]error{"export": exportErr, "follow step": settledErr, "audit counts": countErr} {
		if err == nil || !strings.Contains(err.Error(), "503") {
			t.Errorf("%s with a red index: %v, want Elasticsearch's 503", name, err)
		}
	}
}

// A follow step with filters reads only the documents that match one, each
// with the names of those it matched, in one search.
func TestSettledNamesTheFiltersEachDocumentMatched(t *testing.T) {
	st, r := mixedFixture(t)
	term := func(id string) any { return map[string]any{"term": map[string]any{"id": id}} }
	for _, tt := range []struct {
		filters map[string]any
		want    map[string][]string
	}{
		{map[string]any{"q1": term("n2")}, map[string][]string{"n2": {"q1"}}},
		{map[string]any{"q1": term("n2"), "q2": term("n3"), "all": map[string]any{"match_all": map[string]any{}}},
			map[string][]string{"n2": {"all", "q1"}, "n3": {"all", "q2"}}},
		{map[string]any{"q1": term("nobody")}, map[string][]string{}},
	} {
		page, err := st.Settled(context.Background(), pipeline.SettledQuery{After: 1, UpTo: 3, From: r.From, To: r.To, Size: 10, Filters: tt.filters})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]string{}
		for i, raw := range page.Docs {
			var d exported
			if err := json.Unmarshal(raw, &d); err != nil {
				t.Fatal(err)
			}
			got[d.ID] = slices.Sorted(slices.Values(page.Matched[i]))
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("filters %v: matched %v, want %v", tt.filters, got, tt.want)
		}
	}
}
