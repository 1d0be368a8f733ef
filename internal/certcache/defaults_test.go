package certcache_test

import (
	"testing"

	"github.com/annotated-data/pipeline/internal/certcache"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// Each default lives beside its field, in withDefaults; the environment table
// (config) repeats it for --help and the README. An empty environment must
// configure what the zero Config gets, or the two have drifted apart.
func TestAnEmptyEnvironmentConfiguresTheDefaultsBesideTheFields(t *testing.T) {
	cfg, err := config.LoadBackend(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	want := certcache.WithDefaults(certcache.Config{})
	for _, d := range testenv.DifferentFields(certcache.WithDefaults(cfg.TLSCache.Config), want) {
		t.Errorf("empty environment vs certcache.Config{}: %s", d)
	}
}
