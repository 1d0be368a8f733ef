package audit

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gathered is what reg would serve: each metric's name and value.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			out[f.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return out
}

// Before its first audit a webserver has no verdict: a clean gauge at 0 would
// read as problems found, so the figures wait for the first audit, while the
// interval tells an alert when one is due.
func TestTheAuditFiguresAppearOnlyOnceTheFirstAuditHasFinished(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	g := NewGauges(reg, 4*time.Hour)
	if got := gathered(t, reg); len(got) != 2 || got["webserver_audit_interval_seconds"] != 14400 || got["webserver_audit_failures_total"] != 0 {
		t.Errorf("before any audit: %v, want only webserver_audit_interval_seconds 14400 and webserver_audit_failures_total 0", got)
	}

	s, x := world(500)
	a := &Auditor{Stream: s, Index: x, Name: "S", BucketWidth: 1000, LeafWidth: 16}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { a.Periodically(ctx, 10*time.Millisecond, time.Hour, g, slog.New(slog.DiscardHandler)) })
	defer func() { cancel(); wg.Wait() }()
	var got map[string]float64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if got = gathered(t, reg); got["webserver_audit_last_run_timestamp_seconds"] > 0 {
			break
		}
	}
	if got["webserver_audit_clean"] != 1 || got["webserver_audit_messages"] != 500 || got["webserver_audit_last_run_timestamp_seconds"] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("after the first audit: %v, want clean 1, 500 messages and a last run within the minute", got)
	}
	if _, ok := got["webserver_audit_duration_seconds"]; !ok || len(got) != 12 {
		t.Errorf("after the first audit %d metrics, want all 12: %v", len(got), got)
	}
}
