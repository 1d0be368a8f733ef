//go:build integration

package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// Pipelines whose prefixes nest, as annotations and annotations-lidar: the
// indices of the longer match <outer>-* too. A third one's prefix ends in a year,
// so its indices look like <outer>-<something date-like>. All take the same stream
// name (each on its own NATS server), so only the index names keep them apart.
func TestNestedPrefixesEachReadAndRefreshOnlyTheirOwnIndices(t *testing.T) {
	esURL := testenv.ElasticsearchURL(t)
	outerPrefix := testenv.IndexPrefix(t, esURL)
	innerPrefix := testenv.NestedIndexPrefix(t, esURL, outerPrefix, "lidar")
	datedPrefix := testenv.NestedIndexPrefix(t, esURL, outerPrefix, "2023")
	day := time.Date(2023, 3, 9, 12, 0, 0, 0, time.UTC)
	doc := func(id string, seq int) pipeline.Item {
		ts := day.Add(time.Duration(seq) * time.Second)
		body := fmt.Appendf(nil, `{"@timestamp":%q,"id":%q,"@nats":{"stream":"ANNOTATIONS","seq":%d}}`, ts.Format(time.RFC3339), id, seq)
		return pipeline.Item{ID: id, Timestamp: ts, Body: body}
	}
	// Each installs its own template: Elasticsearch refuses a second one that
	// overlaps the first with the same priority. Lidar's and the dated one's have
	// the same length, and do not overlap.
	testenv.IndexDocuments(t, esURL, outerPrefix, 3, func(i int) pipeline.Item { return doc(fmt.Sprintf("o%d", i+1), i+1) })
	testenv.IndexDocuments(t, esURL, innerPrefix, 2, func(i int) pipeline.Item { return doc(fmt.Sprintf("l%d", i+1), i+1) })
	testenv.IndexDocuments(t, esURL, datedPrefix, 1, func(i int) pipeline.Item { return doc("d1", 1) })
	outer, inner, dated := open(t, esURL, outerPrefix), open(t, esURL, innerPrefix), open(t, esURL, datedPrefix)
	outerIndex, innerIndex, datedIndex := outerPrefix+"-2023.03.09", innerPrefix+"-2023.03.09", datedPrefix+"-2023.03.09"
	ctx := context.Background()

	t.Run("each prefix's template shapes its own new indices", func(t *testing.T) {
		if err := inner.EnsureTemplate(ctx, store.TemplateSettings{Shards: 2, Replicas: 0, RefreshInterval: "-1", IgnoreAbove: 1024}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			index, shards string
		}{{outerPrefix + "-2023.03.10", "1"}, {innerPrefix + "-2023.03.10", "2"}} {
			if got := shardsOfNew(t, esURL, c.index); got != c.shards {
				t.Errorf("a new index %s would have %s shards, want %s", c.index, got, c.shards)
			}
		}
	})

	t.Run("indices", func(t *testing.T) {
		for _, c := range []struct {
			st   *store.Store
			want string
		}{{outer, outerIndex}, {inner, innerIndex}, {dated, datedIndex}} {
			got, err := c.st.Indices(ctx)
			if err != nil || !slices.Equal(got, []string{c.want}) {
				t.Errorf("Indices() = %v, %v; want [%s]", got, err, c.want)
			}
		}
	})

	t.Run("export", func(t *testing.T) {
		r := pipeline.Range{From: day, To: day.Add(time.Hour), PageSize: 10}
		for _, c := range []struct {
			st   *store.Store
			want []string
		}{{outer, []string{"o1", "o2", "o3"}}, {inner, []string{"l1", "l2"}}, {dated, []string{"d1"}}} {
			docs, _ := export(t, c.st, r)
			var got []string
			for _, d := range docs {
				got = append(got, d.ID)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("exported %v, want %v", got, c.want)
			}
		}
	})

	t.Run("follow's settled documents", func(t *testing.T) {
		page, err := outer.Settled(ctx, pipeline.SettledQuery{UpTo: 10, From: day, To: day.Add(time.Hour), Size: 10, Fields: []string{"id"}})
		if err != nil || len(page.Docs) != 3 {
			t.Errorf("Settled() = %d documents, %v; want the outer pipeline's 3", len(page.Docs), err)
		}
	})

	t.Run("audit", func(t *testing.T) {
		all := []pipeline.SeqRange{{From: 1, To: 10}}
		counts, err := outer.SeqCounts(ctx, "ANNOTATIONS", all)
		if want := map[uint64]int{1: 1, 2: 1, 3: 1}; err != nil || !reflect.DeepEqual(counts, want) {
			t.Errorf("SeqCounts() = %v, %v; want %v", counts, err, want)
		}
		buckets, err := inner.SeqBuckets(ctx, "ANNOTATIONS", all, 100, 1)
		if want := []pipeline.SeqBucket{{From: 1, To: 100, Documents: 2, SeqSum: 3}}; err != nil || !reflect.DeepEqual(buckets, want) {
			t.Errorf("SeqBuckets() = %v, %v; want %v", buckets, err, want)
		}
		copies, err := outer.CopiesOf(ctx, []string{"o1", "l1"})
		if want := []pipeline.Copy{{Index: outerIndex, ID: "o1", Seq: 1}}; err != nil || !reflect.DeepEqual(copies, want) {
			t.Errorf("CopiesOf(o1, l1) = %v, %v; want %v", copies, err, want)
		}
	})

	t.Run("refresh", func(t *testing.T) {
		// The template's refresh interval is -1: only a refresh makes it visible.
		if _, err := inner.Bulk(ctx, []pipeline.Item{doc("l3", 3)}); err != nil {
			t.Fatal(err)
		}
		if err := outer.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if n := visible(t, esURL, innerIndex); n != 2 {
			t.Errorf("after the outer pipeline's refresh, %s shows %d documents, want still 2", innerIndex, n)
		}
		if err := inner.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if n := visible(t, esURL, innerIndex); n != 3 {
			t.Errorf("after its own refresh, %s shows %d documents, want 3", innerIndex, n)
		}
	})
}

func open(t *testing.T, esURL, prefix string) *store.Store {
	t.Helper()
	st, err := store.New(store.Config{Addresses: []string{esURL}, IndexPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// shardsOfNew is the number of shards the index templates give a new index name.
func shardsOfNew(t *testing.T, esURL, name string) string {
	t.Helper()
	var parsed struct {
		Template struct {
			Settings struct {
				Index struct {
					Shards string `json:"number_of_shards"`
				} `json:"index"`
			} `json:"settings"`
		} `json:"template"`
	}
	getJSON(t, http.MethodPost, esURL+"/_index_template/_simulate_index/"+name, &parsed)
	return parsed.Template.Settings.Index.Shards
}

// visible counts the documents a search of index sees now, without refreshing it.
func visible(t *testing.T, esURL, index string) int {
	t.Helper()
	var parsed struct {
		Count int `json:"count"`
	}
	getJSON(t, http.MethodGet, esURL+"/"+index+"/_count", &parsed)
	return parsed.Count
}

func getJSON(t *testing.T, method, url string, out any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s", method, url, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
}
