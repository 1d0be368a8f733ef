package admin

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestTheClusterStatusGaugeIsAskedAtEachScrapeAndAbsentWithoutAnAnswer(t *testing.T) {
	tests := []struct {
		status string
		err    error
		want   []float64 // the gauge's values: none without an answer
	}{
		{"green", nil, []float64{0}},
		{"yellow", nil, []float64{1}},
		{"red", nil, []float64{2}},
		{"", errors.New("connection refused"), nil},
		{"purple", nil, nil},
	}
	for _, tt := range tests {
		reg := prometheus.NewRegistry()
		asked := 0
		ElasticsearchStatus(reg, "backend", func(context.Context) (string, error) { asked++; return tt.status, tt.err })
		for scrape := 1; scrape <= 2; scrape++ {
			families, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var got []float64
			for _, f := range families {
				if f.GetName() != "backend_elasticsearch_cluster_status" {
					t.Errorf("unexpected metric %s", f.GetName())
				}
				for _, m := range f.GetMetric() {
					got = append(got, m.GetGauge().GetValue())
				}
			}
			if len(got) != len(tt.want) || len(got) == 1 && got[0] != tt.want[0] || asked != scrape {
				t.Errorf("%q, %v, scrape %d: values %v after %d questions, want %v after %d", tt.status, tt.err, scrape, got, asked, tt.want, scrape)
			}
		}
	}
}
