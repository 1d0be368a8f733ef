package store

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// oneShardFailed is the _shards of an answer that Elasticsearch gathered without
// one of two shards, as it does with a 200 for a shard without a copy.
const oneShardFailed = `"_shards":{"total":2,"successful":1,"skipped":0,"failed":1,"failures":[{"shard":0,"index":"annotations-2023.03.09","node":null,"reason":{"type":"no_shard_available_action_exception","reason":null}}]}`

const allShards = `"_shards":{"total":2,"successful":2,"skipped":0,"failed":0}`

// fakeElasticsearch answers like Elasticsearch: points in time open and close,
// and searches and refreshes answer 200 with the given _shards, and one hit.
func fakeElasticsearch(t *testing.T, pitShards, shards string) *Store {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Elastic-Product", "Elasticsearch") // the client refuses answers without it
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodDelete && r.URL.Path == "/_pit":
			w.Write([]byte(`{"succeeded":true,"num_freed":1}`))
		case strings.HasSuffix(r.URL.Path, "/_pit"):
			w.Write([]byte(`{"id":"pit-1",` + pitShards + `}`))
		case strings.HasSuffix(r.URL.Path, "/_refresh"):
			w.Write([]byte(`{` + shards + `}`))
		case strings.HasSuffix(r.URL.Path, "/_search"):
			w.Write([]byte(`{"pit_id":"pit-1",` + shards + `,"hits":{"hits":[{"_index":"annotations-2023.03.09","_id":"a","_source":{"id":"a"},"sort":[1678363200000,7]}]}}`))
		default:
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	st, err := New(Config{Addresses: []string{srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Every read of the store, given an answer without one of its shards, fails
// with a *PartialError rather than hand on a page or a count that misses
// documents.
func TestEveryReadFailsOnAnAnswerMissingAShard(t *testing.T) {
	day := time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC)
	rng := pipeline.Range{From: day, To: day.Add(time.Hour), PageSize: 10}
	seqs := []pipeline.SeqRange{{From: 1, To: 10}}
	reads := map[string]func(context.Context, *Store) error{
		"export": func(ctx context.Context, st *Store) error {
			return st.Export(ctx, rng, func(pipeline.Page) error {
				t.Error("export handed on a page of a partial answer")
				return nil
			})
		},
		"keyed sliced export": func(ctx context.Context, st *Store) error {
			r := rng
			r.Keys, r.Slices = true, 2
			return st.Export(ctx, r, func(pipeline.Page) error {
				t.Error("sliced export handed on a page of a partial answer")
				return nil
			})
		},
		"follow step": func(ctx context.Context, st *Store) error {
			_, err := st.Settled(ctx, pipeline.SettledQuery{UpTo: 10, From: rng.From, To: rng.To, Size: 10})
			return err
		},
		"follow refresh": func(ctx context.Context, st *Store) error { return st.Refresh(ctx) },
		"audit buckets": func(ctx context.Context, st *Store) error {
			_, err := st.SeqBuckets(ctx, "ANNOTATIONS", seqs, 5, 1)
			return err
		},
		"audit counts": func(ctx context.Context, st *Store) error {
			_, err := st.SeqCounts(ctx, "ANNOTATIONS", seqs)
			return err
		},
		"audit stored": func(ctx context.Context, st *Store) error {
			_, err := st.SeqsStored(ctx, "ANNOTATIONS", []uint64{7})
			return err
		},
		"audit copies": func(ctx context.Context, st *Store) error {
			_, err := st.CopiesOf(ctx, []string{"a"})
			return err
		},
		"audit copies of sequences": func(ctx context.Context, st *Store) error {
			_, err := st.CopiesOfSeqs(ctx, "ANNOTATIONS", []uint64{7})
			return err
		},
	}
	st := fakeElasticsearch(t, allShards, oneShardFailed)
	for name, read := range reads {
		err := read(context.Background(), st)
		var partial *PartialError
		if !errors.As(err, &partial) || partial.Failed != 1 || partial.Total != 2 ||
			!strings.Contains(err.Error(), "only 1 of 2 shards") || !strings.Contains(err.Error(), "no_shard_available_action_exception") {
			t.Errorf("%s: %v, want a *PartialError for 1 of 2 shards naming the failure", name, err)
		}
	}
}

// A point in time opened without some shards would make every page partial.
func TestAnExportFailsOnAPointInTimeMissingAShard(t *testing.T) {
	st := fakeElasticsearch(t, oneShardFailed, allShards)
	day := time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC)
	err := st.Export(context.Background(), pipeline.Range{From: day, To: day.Add(time.Hour), PageSize: 10}, func(pipeline.Page) error {
		t.Error("export handed on a page through a partial point in time")
		return nil
	})
	var partial *PartialError
	if !errors.As(err, &partial) || !strings.Contains(err.Error(), "open point in time") {
		t.Errorf("export: %v, want a *PartialError opening the point in time", err)
	}
}

// The same answers with every shard are read as usual.
func TestAnswersFromEveryShardAreRead(t *testing.T) {
	st := fakeElasticsearch(t, allShards, allShards)
	day := time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC)
	pages := 0
	err := st.Export(context.Background(), pipeline.Range{From: day, To: day.Add(time.Hour), PageSize: 10}, func(p pipeline.Page) error {
		pages++
		if len(p.Docs) != 1 || string(p.Docs[0]) != `{"id":"a"}` {
			t.Errorf("page %q, want the one document", p.Docs)
		}
		return nil
	})
	if err != nil || pages != 1 {
		t.Errorf("export: %d pages, %v; want 1 page", pages, err)
	}
	if err := st.Refresh(context.Background()); err != nil {
		t.Errorf("refresh: %v", err)
	}
	if copies, err := st.CopiesOf(context.Background(), []string{"a"}); err != nil || len(copies) != 1 || copies[0].ID != "a" {
		t.Errorf("copies: %+v, %v; want document a", copies, err)
	}
}
