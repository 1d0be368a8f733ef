// Package monitoring checks the Prometheus rules operators load. It is a module
// of its own so that Prometheus's dependency tree stays out of the pipeline's
// go.mod; `make test` runs it too.
package monitoring

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
)

func TestTheAlertRulesParseWithPrometheusOwnParser(t *testing.T) {
	groups, errs := rulefmt.ParseFile("alerts.yml", false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	alerts := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("group %s: rule %q needs an alert name, a severity label and a summary", g.Name, r.Alert)
			}
			alerts[r.Alert] = true
		}
	}
	for _, want := range []string{"IngestLagGrowing", "ElasticsearchDown", "ElasticsearchIndicesRed", "DeadLettersAppearing", "CertificateExpiresSoon"} {
		if !alerts[want] {
			t.Errorf("alerts.yml has no %s alert", want)
		}
	}
}

// firing evaluates the alert name of alerts.yml every minute over series, given
// in promqltest's load syntax at one sample a minute from time 0, and returns the
// minutes at which it fired. A missing sample is _, a scrape that failed (which
// marks the target's series stale) is stale; 2+0x3 is 2 four times.
func firing(t *testing.T, name, series string, minutes int) []int {
	t.Helper()
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile("alerts.yml", false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var rule *rulefmt.Rule
	for _, g := range groups.Groups {
		for i := range g.Rules {
			if g.Rules[i].Alert == name {
				rule = &g.Rules[i]
			}
		}
	}
	if rule == nil {
		t.Fatalf("alerts.yml has no %s alert", name)
	}
	hold := time.Duration(rule.For)
	storage := promqltest.LoadedStorage(t, "load 1m\n"+series)
	// Prometheus's default lookback: a sample counts for 5 minutes unless marked stale.
	engine := promqltest.NewTestEngine(t, false, 5*time.Minute, 100000)
	// As Prometheus holds an alert: pending from the first evaluation that returns
	// a series, firing once it has for `for`, reset by one that returns none.
	var fired []int
	pendingSince := -1
	for m := range minutes {
		q, err := engine.NewInstantQuery(context.Background(), storage, nil, rule.Expr, time.Unix(0, 0).Add(time.Duration(m)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		res := q.Exec(context.Background())
		if res.Err != nil {
			t.Fatalf("minute %d: %v", m, res.Err)
		}
		vec, err := res.Vector()
		if err != nil {
			t.Fatalf("minute %d: %v", m, err)
		}
		q.Close()
		switch {
		case len(vec) == 0:
			pendingSince = -1
		case pendingSince < 0:
			pendingSince = m
		}
		if pendingSince >= 0 && time.Duration(m-pendingSince)*time.Minute >= hold {
			fired = append(fired, m)
		}
	}
	return fired
}

func TestElasticsearchIndicesRedFiresAfterFiveMinutesOfRedOnly(t *testing.T) {
	tests := []struct {
		name, series string
		want         []int
	}{
		{"red from minute 2, told by the webservers", "webserver_elasticsearch_cluster_status{instance=\"a\"} 0 0 2+0x10\n webserver_elasticsearch_cluster_status{instance=\"b\"} 0+0x12",
			[]int{7, 8, 9, 10, 11, 12}},
		{"red from minute 2, told by the backend", "backend_elasticsearch_cluster_status 1 1 2+0x10", []int{7, 8, 9, 10, 11, 12}},
		{"green", "webserver_elasticsearch_cluster_status 0+0x12\n backend_elasticsearch_cluster_status 0+0x12", nil},
		{"yellow", "webserver_elasticsearch_cluster_status 1+0x12\n backend_elasticsearch_cluster_status 1+0x12", nil},
		{"red for four minutes only", "backend_elasticsearch_cluster_status 2+0x3 0+0x8", nil},
		{"green with missed scrapes", "backend_elasticsearch_cluster_status 0 0 stale _ _ 0 stale stale 0 0 0 0 0", nil},
		{"no answer at all: scrapes failed", "backend_elasticsearch_cluster_status stale stale stale stale stale stale stale stale stale stale stale stale stale", nil},
		{"red until the scrapes failed", "backend_elasticsearch_cluster_status 2+0x2 stale stale stale stale stale stale stale stale stale stale stale", nil},
	}
	for _, tt := range tests {
		if got := firing(t, "ElasticsearchIndicesRed", tt.series, 13); !slices.Equal(got, tt.want) {
			t.Errorf("%s: fired at minutes %v, want %v", tt.name, got, tt.want)
		}
	}
}
