package api_test

import (
	"testing"

	"github.com/annotated-data/pipeline/internal/api"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// Each default lives beside its field, in withDefaults; the environment table
// (config) repeats it for --help and the README. An empty environment must
// configure what the zero Config gets, or the two have drifted apart. Where zero
// means "none" in code, the environment's default is the only one there is, and
// is named here.
func TestAnEmptyEnvironmentConfiguresTheDefaultsBesideTheFields(t *testing.T) {
	cfg, err := config.LoadBackend(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	got := api.WithDefaults(cfg.API)
	want := api.WithDefaults(api.Config{})
	want.RateLimit = 120 // in code 0 is no limit (RATE_LIMIT_REQUESTS)
	if len(got.CursorKey) != 32 {
		t.Errorf("empty environment: cursor key of %d bytes, want 32 derived from the configuration", len(got.CursorKey))
	}
	want.CursorKey = got.CursorKey // derived by config, no default
	for _, d := range testenv.DifferentFields(got, want) {
		t.Errorf("empty environment vs api.Config{}: %s", d)
	}
}
