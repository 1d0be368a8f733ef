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
