package store_test

import (
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// Both binaries configure the store.
func TestAnEmptyEnvironmentConfiguresTheDefaultsBesideTheFields(t *testing.T) {
	webserver, err := config.LoadIngester(testenv.EmptyEnv)
	if err != nil {
		t.Fatal(err)
	}
	backend, err := config.LoadBackend(testenv.EmptyEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := store.WithDefaults(store.Config{})
	want.StartupTimeout = time.Minute // 0 is no wait; the environment's is ELASTICSEARCH_STARTUP_TIMEOUT
	testenv.SameDefaults(t, store.WithDefaults(webserver.Elasticsearch.Config), want)
	testenv.SameDefaults(t, store.WithDefaults(backend.Elasticsearch.Config), want)
}
