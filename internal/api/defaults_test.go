package api_test

import (
	"testing"

	"github.com/annotated-data/pipeline/internal/api"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/testenv"
)

func TestAnEmptyEnvironmentConfiguresTheDefaultsBesideTheFields(t *testing.T) {
	cfg, err := config.LoadBackend(testenv.EmptyEnv)
	if err != nil {
		t.Fatal(err)
	}
	got := api.WithDefaults(cfg.API)
	want := api.WithDefaults(api.Config{})
	want.RateLimit = 120 // 0 is no limit; the environment's is RATE_LIMIT_REQUESTS
	if len(got.CursorKey) != 32 {
		t.Errorf("cursor key of %d bytes from an empty environment, want 32 derived from the configuration", len(got.CursorKey))
	}
	want.CursorKey = got.CursorKey // derived by config, no default
	testenv.SameDefaults(t, got, want)
}
