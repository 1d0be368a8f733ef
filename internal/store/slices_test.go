package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// runsOf makes a slice's runs from keys written "time:tiebreak", one run per
// group; each document is its own key, so a merge's output spells its order.
func runsOf(groups ...[]string) []run {
	var runs []run
	for _, g := range groups {
		var r run
		for _, k := range g {
			var key sortKey
			fmt.Sscanf(k, "%d:%d:%d", &key[0], &key[1], &key[2])
			r.docs = append(r.docs, []byte(k))
			r.keys = append(r.keys, key)
		}
		runs = append(runs, r)
	}
	return runs
}

// fixedMerger merges slices given as their runs, recording how many runs each
// slice was asked for.
func fixedMerger(descending bool, slices ...[]run) (*merger, []int) {
	asked := make([]int, len(slices))
	return &merger{descending: descending, heads: make([]run, len(slices)), next: func(i int) (run, bool, error) {
		asked[i]++
		if len(slices[i]) == 0 {
			return run{}, false, nil
		}
		r := slices[i][0]
		slices[i] = slices[i][1:]
		return r, true, nil
	}}, asked
}

func docs(p pipeline.Page) string {
	var s []string
	for _, d := range p.Docs {
		s = append(s, string(d))
	}
	return strings.Join(s, " ")
}

func TestMergedSlicesComeInTheOrderOfTheWhole(t *testing.T) {
	m, _ := fixedMerger(false,
		runsOf([]string{"1:5", "3:1"}, []string{"3:9", "7:0"}),
		runsOf([]string{"2:0", "3:2"}, nil, []string{"8:1"}),
		runsOf([]string{"3:3"}),
	)
	page, err := m.take(100, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := docs(page), "1:5 2:0 3:1 3:2 3:3 3:9 7:0 8:1"; got != want {
		t.Errorf("merged %s, want %s", got, want)
	}
}

func TestDescendingSlicesMergeNewestFirst(t *testing.T) {
	m, _ := fixedMerger(true,
		runsOf([]string{"9:1", "5:4"}, []string{"5:2"}),
		runsOf([]string{"8:0", "5:3", "1:1"}),
	)
	page, err := m.take(100, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := docs(page), "9:1 8:0 5:4 5:3 5:2 1:1"; got != want {
		t.Errorf("merged %s, want %s", got, want)
	}
}

func TestEqualKeysGoByTheSliceThenInEachSlicesOwnOrder(t *testing.T) {
	// A point in time never gives two documents one key; were it to, the merge
	// would still be deterministic.
	unkeyed := sortKey{4, 9223372036854775807, 0}
	named := func(names ...string) run {
		r := run{}
		for _, n := range names {
			r.docs, r.keys = append(r.docs, []byte(n)), append(r.keys, unkeyed)
		}
		return r
	}
	m, _ := fixedMerger(false,
		append(runsOf([]string{"4:1"}), named("a1")),
		[]run{named("b1", "b2")},
	)
	page, err := m.take(100, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := docs(page), "4:1 a1 b1 b2"; got != want {
		t.Errorf("merged %s, want %s", got, want)
	}
}

func TestTakeStopsAtNAndTheNextTakeGoesOn(t *testing.T) {
	m, asked := fixedMerger(false,
		runsOf([]string{"1:0", "3:0", "5:0"}),
		runsOf([]string{"2:0", "4:0", "6:0"}),
	)
	var pages []string
	for _, n := range []int{2, 3, 4} {
		page, err := m.take(n, true)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, docs(page))
		if len(page.Keys) != len(page.Docs) {
			t.Errorf("%d keys for %d documents", len(page.Keys), len(page.Docs))
		}
	}
	if want := []string{"1:0 2:0", "3:0 4:0 5:0", "6:0"}; !slices.Equal(pages, want) {
		t.Errorf("pages %q, want %q", pages, want)
	}
	// Each slice's one run, then the question that found it ended.
	if !slices.Equal(asked, []int{2, 2}) {
		t.Errorf("runs asked of each slice %v, want [2 2]", asked)
	}
}

func TestMergedKeysAreTheDocumentsSortValues(t *testing.T) {
	m, _ := fixedMerger(false, runsOf([]string{"1700000000000:42"}), runsOf([]string{"1700000000001:7"}))
	page, err := m.take(2, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []pipeline.Key{{Time: 1700000000000, Seq: 42}, {Time: 1700000000001, Seq: 7}}
	if !slices.Equal(page.Keys, want) {
		t.Errorf("keys %v, want %v", page.Keys, want)
	}
}

func TestAMergeWaitsForNoSliceOnceItHasEnded(t *testing.T) {
	m, asked := fixedMerger(false, nil, runsOf([]string{"1:0"}, []string{"2:0"}))
	page, err := m.take(10, false)
	if err != nil || docs(page) != "1:0 2:0" {
		t.Fatalf("take = %q, %v; want 1:0 2:0", docs(page), err)
	}
	if page, err := m.take(10, false); err != nil || len(page.Docs) != 0 {
		t.Errorf("take after the end = %q, %v; want nothing", docs(page), err)
	}
	if !slices.Equal(asked, []int{1, 3}) {
		t.Errorf("runs asked of each slice %v, want [1 3]", asked)
	}
}

func TestAFailingSliceFailsTheMerge(t *testing.T) {
	errShard := errors.New("shard failed")
	m := &merger{heads: make([]run, 2), next: func(i int) (run, bool, error) {
		if i == 1 {
			return run{}, false, errShard
		}
		return runsOf([]string{"1:0"})[0], true, nil
	}}
	if _, err := m.take(1, false); !errors.Is(err, errShard) {
		t.Errorf("take = %v, want the slice's error", err)
	}
}

func TestSortValuesParseAsTwoOrThreeLongs(t *testing.T) {
	tests := []struct {
		raw  string
		want sortKey
		ok   bool
	}{
		{`[1678363200000,4294967298]`, sortKey{1678363200000, 4294967298, 0}, true},
		{`[1678377600000,1,0]`, sortKey{1678377600000, 1, 0}, true},
		{` [ -5 , 9223372036854775807, 12 ] `, sortKey{-5, 9223372036854775807, 12}, true},
		{`[1678363200000,-9223372036854775808]`, sortKey{1678363200000, -9223372036854775808, 0}, true},
		{`[1678363200000]`, sortKey{}, false},
		{`[1,2,3,4]`, sortKey{}, false},
		{`["2023-03-09",1]`, sortKey{}, false},
		{`[1.5,1]`, sortKey{}, false},
		{`[1,2`, sortKey{}, false},
		{`null`, sortKey{}, false},
		{``, sortKey{}, false},
	}
	for _, tt := range tests {
		got, err := parseSortKey([]byte(tt.raw))
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("parseSortKey(%q) = %v, %v; want %v, ok %t", tt.raw, got, err, tt.want, tt.ok)
		}
	}
}

func TestPagesGrowFromTheFirstPageSizeToThePageSize(t *testing.T) {
	sizes := newPageSizes(pipeline.Range{FirstPageSize: 1000, PageSize: 10000})
	var got []int
	for range 6 {
		n := sizes.size()
		got = append(got, n)
		if sizes.last(n, n) {
			t.Fatalf("a full page of %d ended the pages", n)
		}
	}
	if want := []int{1000, 2000, 4000, 8000, 10000, 10000}; !slices.Equal(got, want) {
		t.Errorf("page sizes %v, want %v", got, want)
	}
	if !sizes.last(9999, 10000) {
		t.Error("a short page did not end the pages")
	}
}

func TestEachSliceStopsAtTheLimitOnItsOwn(t *testing.T) {
	// Any one slice may hold all of the first Limit documents.
	sizes := newPageSizes(pipeline.Range{FirstPageSize: 2, PageSize: 100, Limit: 5})
	if n := sizes.size(); n != 2 || sizes.last(2, 2) {
		t.Fatalf("first page %d, or ended; want 2, going on", n)
	}
	if n := sizes.size(); n != 3 || !sizes.last(3, 3) {
		t.Errorf("second page %d, or not ended; want 3 and the end", n)
	}
}
