//go:build integration

package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/testenv"
)

func TestRetentionDeletesExactlyTheIndicesWhollyOlderThanIt(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	now := time.Now().UTC()
	days := []int{40, 31, 29, 0}
	testenv.IndexDocuments(t, h.esURL, h.prefix, len(days), func(i int) pipeline.Item {
		ts := now.AddDate(0, 0, -days[i])
		return pipeline.Item{ID: "d" + string(rune('a'+i)), Timestamp: ts, Body: testenv.DocumentBody("d", ts, "cam-01")}
	})
	day := func(ago int) string { return now.AddDate(0, 0, -ago).Format("2006.01.02") }
	// Another prefix that begins like this one: its indices match <prefix>-*.
	other := h.prefix + "-lidar-" + day(40)
	testenv.ESJSON(t, http.MethodPut, h.esURL+"/"+other, nil, nil)

	ws := h.startWebserver(map[string]string{"ES_RETENTION": "30d", "NATS_STREAM_MAX_AGE": "24h"})
	want := []string{h.prefix + "-" + day(29), h.prefix + "-" + day(0), other}
	slices.Sort(want)
	if got := waitIndices(t, h.esURL, h.prefix+"-*", want); !slices.Equal(got, want) {
		t.Fatalf("indices = %v, want %v", got, want)
	}
	if n := waitDeletedCount(t, ws.admin, 2); n != 2 {
		t.Errorf("webserver_indices_deleted_total = %v, want 2", n)
	}
	out := ws.proc.Output()
	for _, ago := range []int{40, 31} {
		if n := strings.Count(out, `"deleted index past its retention","index":"`+h.prefix+"-"+day(ago)+`"`); n != 1 {
			t.Errorf("the deletion of the index of %d days ago was logged %d times, want once", ago, n)
		}
	}
	if n := strings.Count(out, "the stream keeps messages for less time than the indices are kept"); n != 1 {
		t.Errorf("the warning about the stream's shorter max age was logged %d times, want once", n)
	}
}

// indices lists the indices matching pattern, sorted.
// waitIndices waits up to 30 s, while retention runs, for the indices matching
// pattern to be want (sorted), and returns the last it saw.
func waitIndices(t *testing.T, esURL, pattern string, want []string) []string {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got = indices(t, esURL, pattern); slices.Equal(got, want) {
			break
		}
	}
	return got
}

// waitDeletedCount waits up to 5 s for the webserver at admin to count want
// indices deleted, and returns the last count: an index is gone a moment before
// retention counts it.
func waitDeletedCount(t *testing.T, admin string, want float64) float64 {
	t.Helper()
	var n float64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if n = scrape(t, admin+"/metrics")["webserver_indices_deleted_total"]; n == want || time.Now().After(deadline) {
			return n
		}
	}
}

func indices(t *testing.T, esURL, pattern string) []string {
	t.Helper()
	var rows []struct {
		Index string `json:"index"`
	}
	res, err := http.Get(esURL + "/_cat/indices/" + pattern + "?format=json&h=index")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&rows); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		out = append(out, r.Index)
	}
	slices.Sort(out)
	return out
}
