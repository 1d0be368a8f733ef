package certs_test

import (
	"testing"

	"github.com/annotated-data/pipeline/internal/certs"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// Each default lives beside its field, in withDefaults; the environment table
// (config) repeats it for --help and the README. An empty environment must
// configure what the zero Config gets, or the two have drifted apart. Where a
// field has no default in code, the environment's is the only one there is, and
// is named here.
func TestAnEmptyEnvironmentConfiguresTheDefaultsBesideTheFields(t *testing.T) {
	cfg, err := config.LoadBackend(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	want := certs.WithDefaults(certs.Config{})
	want.Mode = certs.Off                       // "" is Off in code; the environment names it (TLS_MODE)
	want.CacheDir = "/var/lib/backend/autocert" // the backend's own place (TLS_CACHE_DIR)
	for _, d := range testenv.DifferentFields(certs.WithDefaults(cfg.TLS), want) {
		t.Errorf("empty environment vs certs.Config{}: %s", d)
	}
}
