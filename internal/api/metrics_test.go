package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

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
	if n := series["backend_elasticsearch_request_duration_seconds"]; n != 6 {
		t.Errorf("backend_elasticsearch_request_duration_seconds has %d series at start, want 6 (open_pit, search, close_pit, refresh, field_caps, counts)", n)
	}
	if n := series["backend_elasticsearch_request_failures_total"]; n != 12 {
		t.Errorf("backend_elasticsearch_request_failures_total has %d series at start, want 12 (open_pit, search, close_pit, refresh, field_caps, counts; each refused and error)", n)
	}
}

// A request Elasticsearch refuses (401, 403) is counted apart from one that
// failed otherwise: the first needs an operator to fix credentials or roles, and
// ElasticsearchRefusesBackend says so, where BackendElasticsearchFailing would
// send them looking at the cluster.
func TestARefusedElasticsearchRequestIsCountedApartFromOtherFailures(t *testing.T) {
	t.Parallel()
	m := NewMetrics(prometheus.NewRegistry())
	m.ObserveQuery("open_pit", time.Millisecond, fmt.Errorf("open point in time: %w", answered(http.StatusUnauthorized)))
	m.ObserveQuery("search", time.Millisecond, answered(http.StatusForbidden))
	m.ObserveQuery("search", time.Millisecond, answered(http.StatusServiceUnavailable))
	m.ObserveQuery("search", time.Millisecond, errors.New("dial tcp 127.0.0.1:9200: connection refused"))
	m.ObserveQuery("search", time.Millisecond, context.DeadlineExceeded)
	m.ObserveQuery("counts", time.Millisecond, nil)

	want := map[string]float64{
		"open_pit refused": 1, "search refused": 1, "search error": 3,
	}
	families, err := m.gatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "backend_elasticsearch_request_failures_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			key := labels["operation"] + " " + labels["cause"]
			if got := s.GetCounter().GetValue(); got != want[key] {
				t.Errorf("failures of %s = %v, want %v", key, got, want[key])
			}
		}
	}
}

// answered is an error answer from Elasticsearch as the store gives it: with
// the status it came with.
type answered int

func (a answered) Error() string   { return fmt.Sprintf("elasticsearch answered %d", int(a)) }
func (a answered) StatusCode() int { return int(a) }
