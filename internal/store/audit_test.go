//go:build integration

package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// TestCopiesAreListedBeyondTheResultWindow: after a whole daily index is deleted,
// the audit looks up tens of thousands of ids at once; Elasticsearch refuses any
// one search for more than index.max_result_window (10,000) hits, so the lookups
// must page, and find every copy.
func TestCopiesAreListedBeyondTheResultWindow(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	const n = 10050
	start := time.Date(2023, 3, 9, 12, 0, 0, 0, time.UTC)
	testenv.IndexDocuments(t, esURL, prefix, n, func(i int) pipeline.Item {
		ts := start.Add(time.Duration(i) * time.Second)
		id := fmt.Sprintf("S-%d", i+1)
		return pipeline.Item{ID: id, Timestamp: ts,
			Body: fmt.Appendf(nil, `{"@timestamp":%q,"@nats":{"stream":"S","seq":%d}}`, ts.Format(time.RFC3339), i+1)}
	})
	st, err := store.New(store.Config{Addresses: []string{esURL}, IndexPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, n+50)
	seqs := make([]uint64, 0, n+50)
	for seq := uint64(1); seq <= n+50; seq++ { // 50 that were never stored
		ids, seqs = append(ids, fmt.Sprintf("S-%d", seq)), append(seqs, seq)
	}
	want := func(t *testing.T, what string, copies []pipeline.Copy) {
		t.Helper()
		got := make([]uint64, len(copies))
		for i, c := range copies {
			if c.ID != fmt.Sprintf("S-%d", c.Seq) {
				t.Fatalf("%s: %+v holds the sequence of another id", what, c)
			}
			got[i] = c.Seq
		}
		slices.Sort(got)
		for i, seq := range got {
			if seq != uint64(i+1) || len(got) != n {
				t.Errorf("%s: %d copies, the %dth of sequence %d; want each of sequences 1-%d once", what, len(got), i+1, seq, n)
				return
			}
		}
		if len(got) == 0 {
			t.Errorf("%s: no copies, want each of sequences 1-%d once", what, n)
		}
	}

	ctx := context.Background()
	byID, err := st.CopiesOf(ctx, ids)
	if err != nil {
		t.Fatalf("CopiesOf %d ids: %v", len(ids), err)
	}
	want(t, "CopiesOf", byID)
	bySeq, err := st.CopiesOfSeqs(ctx, "S", seqs)
	if err != nil {
		t.Fatalf("CopiesOfSeqs %d sequences: %v", len(seqs), err)
	}
	want(t, "CopiesOfSeqs", bySeq)
}
