package api

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The failure alert divides failures by requests: both must count every
// operation from 0, so that the first requests after a start are not lost to it.
func TestEveryElasticsearchOperationIsCountedFromZero(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if m.GetCounter().GetValue() != 0 || m.GetHistogram().GetSampleCount() != 0 {
				t.Errorf("%s %v is not 0 at start", f.GetName(), m.GetLabel())
			}
			series[f.GetName()]++
		}
	}
	for _, name := range []string{"backend_elasticsearch_request_duration_seconds", "backend_elasticsearch_request_failures_total"} {
		if series[name] != 6 {
			t.Errorf("%s has %d series at start, want 6 (open_pit, search, close_pit, refresh, field_caps, counts)", name, series[name])
		}
	}
}
