package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

func TestEveryKnownDeadLetterReasonIsExportedFromZero(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() == "webserver_messages_dead_lettered_total" {
			for _, s := range f.GetMetric() {
				got[s.GetLabel()[0].GetValue()] = s.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{}
	for _, r := range pipeline.Reasons() {
		want[string(r)] = 0
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dead-letter series at start: %v, want %v", got, want)
	}
	m.deadLettered.WithLabelValues(string(pipeline.ReasonTooLarge)).Inc()
	if got := value(m.deadLettered); got != 1 {
		t.Errorf("after one dead letter the counters sum to %d, want 1", got)
	}
}

// statusError is an error answered with an HTTP status, as the store's are.
type statusError int

func (e statusError) Error() string   { return fmt.Sprintf("elasticsearch answered %d", int(e)) }
func (e statusError) StatusCode() int { return int(e) }

// A refusal (401, 403) and an unreachable cluster pause ingestion alike, but the
// metrics tell them apart: they need different people.
func TestARefusedBulkRequestIsToldApartFromAnUnreachableCluster(t *testing.T) {
	t.Parallel()
	failures := []error{
		fmt.Errorf("bulk request: %w", statusError(401)),
		fmt.Errorf("bulk request: %w", statusError(403)),
		errors.New("dial tcp 127.0.0.1:9200: connection refused"),
		fmt.Errorf("bulk request: %w", statusError(503)),
	}
	type state struct{ up, refused float64 }
	var seen []state
	var in *Ingester
	idx := &fakeIndexer{bulk: func(call int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
		if call > 0 { // what the previous answer left
			seen = append(seen, state{float64(value(in.metrics.esUp)), float64(value(in.metrics.esRefused))})
		}
		if call < len(failures) {
			return nil, failures[call]
		}
		return outcomes(items, pipeline.Created, 201, ""), nil
	}}
	in, logs := testIngester(t, idx, &fakeJetStream{}, Config{})
	if got := (state{float64(value(in.metrics.esUp)), float64(value(in.metrics.esRefused))}); got != (state{1, 0}) {
		t.Errorf("at start up=%v refused=%v, want 1 and 0", got.up, got.refused)
	}
	in.index(context.Background(), batchOf(t, in, newMsg(1, frame(1))))
	seen = append(seen, state{float64(value(in.metrics.esUp)), float64(value(in.metrics.esRefused))})

	want := []state{{0, 1}, {0, 1}, {0, 0}, {0, 0}, {1, 0}}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("(up refused) after 401, 403, connection refused, 503, success: %v, want %v", seen, want)
	}
	out := logs.String()
	if n := strings.Count(out, "elasticsearch refuses the bulk requests"); n != 1 {
		t.Errorf("%d lines about the refusal, want 1 (401 then 403 is one state):\n%s", n, out)
	}
	if n := strings.Count(out, "elasticsearch unreachable"); n != 1 {
		t.Errorf("%d lines about the cluster unreachable, want 1:\n%s", n, out)
	}
}
