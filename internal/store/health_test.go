//go:build integration

package store_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

func newStore(t *testing.T, esURL, prefix string) *store.Store {
	t.Helper()
	st, err := store.New(store.Config{Addresses: []string{esURL}, IndexPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Check passes on green, is a degraded *store.YellowError on yellow and a
// *store.RedError while an index of the store's is red; another prefix's red
// index is none of its business.
func TestCheckFailsOnlyWhileAnIndexOfTheStoreIsRed(t *testing.T) {
	esURL := testenv.ElasticsearchURL(t)
	prefix, other := testenv.IndexPrefix(t, esURL), testenv.IndexPrefix(t, esURL)
	day := time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC)
	testenv.IndexDocuments(t, esURL, prefix, 1, func(int) pipeline.Item {
		return pipeline.Item{ID: "a", Timestamp: day, Body: testenv.DocumentBody("a", day, "cam-1")}
	})
	st, bystander := newStore(t, esURL, prefix), newStore(t, esURL, other)
	ctx := context.Background()
	if h, err := st.Health(ctx); h != store.Green || err != nil {
		t.Fatalf("before: health %q, %v; want green", h, err)
	}

	// One node cannot hold a replica: yellow, and every document still readable.
	testenv.ESJSON(t, http.MethodPut, esURL+"/"+st.IndexName(day.AddDate(0, 0, 2)), []byte(`{"settings":{"number_of_replicas":1}}`), nil)
	var yellow *store.YellowError
	if h, err := st.Health(ctx); h != store.Yellow || err != nil || !errors.As(st.Check(ctx), &yellow) || !yellow.Degraded() {
		t.Errorf("with a replica missing: health %q, %v, check %v; want yellow and a degraded *store.YellowError", h, err, st.Check(ctx))
	}
	testenv.ESJSON(t, http.MethodDelete, esURL+"/"+st.IndexName(day.AddDate(0, 0, 2)), nil, nil)

	heal := testenv.RedIndex(t, esURL, st.IndexName(day.AddDate(0, 0, 1)))
	health, healthErr := st.Health(ctx)
	checkErr := st.Check(ctx)
	otherHealth, otherErr := bystander.Health(ctx)
	heal()

	var red *store.RedError
	if health != store.Red || healthErr != nil || !errors.As(checkErr, &red) {
		t.Errorf("with a red index: health %q, %v; check %v; want red and a *store.RedError", health, healthErr, checkErr)
	}
	if otherHealth != store.Green || otherErr != nil {
		t.Errorf("another prefix, with no index at all: health %q, %v; want green", otherHealth, otherErr)
	}
	if err := st.Check(ctx); err != nil {
		t.Errorf("healed: check %v, want nil", err)
	}
}
