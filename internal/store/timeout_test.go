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

// A point in time that Elasticsearch takes longer than PITTimeout to open fails
// the export with a *TimeoutError: the cluster is slow, not unreachable.
func TestASlowPointInTimeIsATimeoutNotAnOutage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		w.Write([]byte(`{"id":"pit-1","_shards":{"total":1,"successful":1,"failed":0}}`))
	}))
	t.Cleanup(srv.Close)
	st, err := New(Config{Addresses: []string{srv.URL}, PITTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC)
	start := time.Now()
	err = st.Export(context.Background(), pipeline.Range{From: day, To: day.Add(time.Hour), PageSize: 10}, func(pipeline.Page) error { return nil })
	took := time.Since(start)
	var slow *TimeoutError
	if !errors.As(err, &slow) || slow.TimedOut() != 100*time.Millisecond || !strings.Contains(err.Error(), "did not open point in time within 100ms (slow, not unreachable)") {
		t.Errorf("export: %v, want a *TimeoutError after 100ms", err)
	}
	if took > 2*time.Second {
		t.Errorf("export took %s, want about PITTimeout (100ms)", took)
	}
}

func TestThePointInTimeTimeoutDefaultsToTenSeconds(t *testing.T) {
	st, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if st.cfg.PITTimeout != 10*time.Second {
		t.Errorf("PITTimeout = %s, want 10s", st.cfg.PITTimeout)
	}
}
