package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/store"
)

// IndexDocuments stores n documents, made by doc(0) … doc(n-1), under prefix the way
// the webserver does (its index template, one index per day, op_type create), and
// makes them searchable. It goes straight to Elasticsearch: tests of what reads
// documents back need no NATS. Each Item's Body must hold its @timestamp.
func IndexDocuments(t testing.TB, esURL, prefix string, n int, doc func(i int) pipeline.Item) {
	t.Helper()
	st, err := store.New(store.Config{Addresses: []string{esURL}, IndexPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	// No refresh while loading, no replica on a single node: loading is faster, and
	// Refresh below makes everything visible at once.
	if err := st.EnsureTemplate(ctx, store.TemplateSettings{Shards: 1, Replicas: 0, RefreshInterval: "-1", IgnoreAbove: 1024, Nested: []string{"labels"}}); err != nil {
		t.Fatal(err)
	}
	const batch = 5000
	items := make([]pipeline.Item, 0, batch)
	flush := func() {
		results, err := st.Bulk(ctx, items)
		if err != nil {
			t.Fatalf("index documents: %v", err)
		}
		for i, r := range results {
			if r.Outcome != pipeline.Created {
				t.Fatalf("index document %s: %d %s %s", items[i].ID, r.Status, r.Type, r.Reason)
			}
		}
		items = items[:0]
	}
	for i := range n {
		items = append(items, doc(i))
		if len(items) == batch {
			flush()
		}
	}
	if len(items) > 0 {
		flush()
	}
	Refresh(t, esURL, prefix+"-*")
}

// DocumentBody is a small annotated-frame document as the webserver stores it:
// {"@timestamp":…,"id":…,"camera_id":…,"objects":[…]}.
func DocumentBody(id string, ts time.Time, camera string) []byte {
	return fmt.Appendf(nil, `{"@timestamp":%q,"id":%q,"camera_id":%q,"objects":[{"label":"person","score":0.93,"bbox":[12,40,96,210]},{"label":"car","score":0.71,"bbox":[300,120,520,260]}]}`,
		ts.UTC().Format(time.RFC3339Nano), id, camera)
}
