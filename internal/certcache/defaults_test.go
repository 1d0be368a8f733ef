package certcache_test

import (
	"testing"

	"github.com/annotated-data/pipeline/internal/certcache"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/testenv"
)

func TestAnEmptyEnvironmentConfiguresTheDefaultsBesideTheFields(t *testing.T) {
	cfg, err := config.LoadBackend(testenv.EmptyEnv)
	if err != nil {
		t.Fatal(err)
	}
	testenv.SameDefaults(t, certcache.WithDefaults(cfg.TLSCache.Config), certcache.WithDefaults(certcache.Config{}))
}
