package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/audit"
	"github.com/annotated-data/pipeline/internal/retention"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/annotated-data/pipeline/internal/admin"
	"github.com/annotated-data/pipeline/internal/api"
	"github.com/annotated-data/pipeline/internal/certs"
	"github.com/annotated-data/pipeline/internal/ingest"
)

// The dashboard and the alert rules in deploy/monitoring name metrics by string;
// a renamed metric would leave an empty panel, or an alert that never fires. The
// rule file's syntax is checked by Prometheus's own parser in the nested module
// deploy/monitoring (its dependency tree stays out of this go.mod).

// binaryRegistries are the registries each binary serves on /metrics, filled by
// the same constructors their run functions call.
func binaryRegistries() map[string]*prometheus.Registry {
	webserver := admin.NewRegistry()
	ingest.NewMetrics(webserver)
	// Registered when ES_RETENTION and AUDIT_INTERVAL are set.
	retention.New(nil, retention.Config{}, nil, webserver)
	audit.NewGauges(webserver, time.Hour)
	admin.ElasticsearchStatus(webserver, "webserver", nil)
	backend := admin.NewRegistry()
	api.NewMetrics(backend)
	admin.ElasticsearchStatus(backend, "backend", nil)
	certs.ExpiryGauge(backend)
	return map[string]*prometheus.Registry{"webserver": webserver, "backend": backend}
}

// registered reports whether reg holds a metric named name. A vector with no
// series yet is not gathered, so ask the registry instead: it refuses a second
// metric of a name it already holds.
func registered(reg *prometheus.Registry, name string) bool {
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "probe"})
	if err := reg.Register(probe); err == nil {
		reg.Unregister(probe)
		return false
	}
	return true
}

// ourMetric matches the names of the binaries' own metrics in PromQL.
var ourMetric = regexp.MustCompile(`\b(?:webserver|backend)_[a-z0-9_]+\b`)

// dashboardExprs returns every query of the dashboard.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Type, Title string
			Targets     []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	return exprs
}

func TestEveryMetricTheDashboardAndTheAlertsNameIsExported(t *testing.T) {
	rules, err := os.ReadFile("monitoring/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]string{} // metric → where
	for _, e := range dashboardExprs(t) {
		for _, m := range ourMetric.FindAllString(e, -1) {
			named[m] = "grafana-dashboard.json"
		}
	}
	for _, m := range ourMetric.FindAllString(string(rules), -1) {
		named[m] = "alerts.yml"
	}
	if len(named) < 10 {
		t.Fatalf("found only %d metric names in the dashboard and the rules: %v", len(named), named)
	}
	regs := binaryRegistries()
	for name, where := range named {
		binary, _, _ := strings.Cut(name, "_")
		reg := regs[binary]
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} { // a histogram's series
			if s, ok := strings.CutSuffix(name, suffix); ok && registered(reg, s) {
				base = s
			}
		}
		if !registered(reg, base) {
			t.Errorf("%s names %s, which the %s does not export", where, name, binary)
		}
	}
}
