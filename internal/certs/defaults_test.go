package certs_test

import (
	"testing"

	"github.com/annotated-data/pipeline/internal/certs"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/testenv"
)

func TestAnEmptyEnvironmentConfiguresTheDefaultsBesideTheFields(t *testing.T) {
	cfg, err := config.LoadBackend(testenv.EmptyEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := certs.WithDefaults(certs.Config{})
	want.Mode = certs.Off                       // "" is Off; the environment names it (TLS_MODE)
	want.CacheDir = "/var/lib/backend/autocert" // none in code; the backend's (TLS_CACHE_DIR)
	testenv.SameDefaults(t, certs.WithDefaults(cfg.TLS), want)
}
