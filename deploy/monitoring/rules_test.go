// Package monitoring checks the Prometheus rules operators load. It is a module
// of its own so that Prometheus's dependency tree stays out of the pipeline's
// go.mod; `make test` runs it too.
package monitoring

import (
	"log/slog"
	"os"
	"os/exec"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
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
	for _, want := range []string{"WebserverDown", "WebserverMetricsAbsent", "IngestLagGrowing", "ElasticsearchDown",
		"ElasticsearchRefusesWebserver", "ElasticsearchIndicesRed", "DeadLettersAppearing", "AuditNotClean", "AuditNotRunning",
		"BackendDown", "BackendMetricsAbsent", "BackendElasticsearchFailing", "ElasticsearchRefusesBackend", "CertificateExpiresSoon"} {
		if !alerts[want] {
			t.Errorf("alerts.yml has no %s alert", want)
		}
	}
}

// An alert is only as good as the cases it was tried on: each has one where it
// must fire and one where it must stay quiet (a near miss: a restart, a missed
// scrape, low traffic, its feature off), in alerts_test.yml.
func TestEveryAlertHasACaseWhereItFiresAndOneWhereItStaysQuiet(t *testing.T) {
	groups, errs := rulefmt.ParseFile("alerts.yml", false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	data, err := os.ReadFile("alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cases struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(data, &cases); err != nil {
		t.Fatalf("alerts_test.yml: %v", err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, c := range cases.Tests {
		for _, a := range c.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if !fires[r.Alert] {
				t.Errorf("alerts_test.yml has no case where %s fires", r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("alerts_test.yml has no case where %s stays quiet", r.Alert)
			}
		}
	}
}

// TestTheAlertRulesPassTheirUnitTests runs alerts_test.yml with Prometheus's own
// promtool: each alert's must-fire and must-stay-quiet cases over synthetic
// series. promtool comes with Debian's prometheus package; .ci/run installs it.
func TestTheAlertRulesPassTheirUnitTests(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		msg := "promtool is needed to test the alert rules: install it (Debian: apt-get install prometheus) and run again"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	out, err := exec.Command(promtool, "test", "rules", "alerts_test.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules alerts_test.yml: %v\n%s", err, out)
	}
}
