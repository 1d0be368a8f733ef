package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// yellow is a finding that says of itself that it is degraded, as the store's
// yellow indices do.
type yellow struct{}

func (yellow) Error() string  { return "indices annotations-* are yellow" }
func (yellow) Degraded() bool { return true }

// A degraded dependency leaves the process ready and is named in the body; a
// failing one makes it unready, and what is degraded besides is named too.
func TestReadinessNamesWhatIsDegradedAndStaysReady(t *testing.T) {
	t.Parallel()
	red := errors.New("indices annotations-* are red")
	down := errors.New("not connected")
	tests := []struct {
		name   string
		checks []Check
		status int
		body   map[string]any
	}{
		{"all well", []Check{{"elasticsearch", func(context.Context) error { return nil }}},
			http.StatusOK, map[string]any{"status": "ready"}},
		{"yellow, degraded by its own say", []Check{{"elasticsearch", func(context.Context) error { return fmt.Errorf("check: %w", yellow{}) }}},
			http.StatusOK, map[string]any{"status": "ready", "degraded": map[string]any{"elasticsearch": "check: indices annotations-* are yellow"}}},
		{"red, degraded by the caller's say", []Check{{"elasticsearch", func(context.Context) error { return Degraded(red) }}},
			http.StatusOK, map[string]any{"status": "ready", "degraded": map[string]any{"elasticsearch": "indices annotations-* are red"}}},
		{"one failing, one degraded", []Check{
			{"nats", func(context.Context) error { return down }},
			{"elasticsearch", func(context.Context) error { return yellow{} }}},
			http.StatusServiceUnavailable, map[string]any{"status": "not ready", "failing": map[string]any{"nats": "not connected"},
				"degraded": map[string]any{"elasticsearch": "indices annotations-* are yellow"}}},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		Handler(Options{Metrics: prometheus.NewRegistry()}, tt.checks...).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %s: %v", tt.name, rec.Body, err)
		}
		if rec.Code != tt.status || !reflect.DeepEqual(body, tt.body) {
			t.Errorf("%s: /readyz %d %s, want %d %v", tt.name, rec.Code, rec.Body, tt.status, tt.body)
		}
	}
}
