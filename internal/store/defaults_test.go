package store_test

import (
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// Each default lives beside its field, in withDefaults; the environment table
// (config) repeats it for --help and the README. An empty environment must
// configure what the zero Config gets, for either binary, or the two have
// drifted apart. Where zero means "none" in code, the environment's default is
// the only one there is, and is named here.
func TestAnEmptyEnvironmentConfiguresTheDefaultsBesideTheFields(t *testing.T) {
	for name, load := range map[string]func() (store.Config, error){
		"webserver": func() (store.Config, error) {
			cfg, err := config.LoadIngester(func(string) string { return "" })
			return cfg.Elasticsearch.Config, err
		},
		"backend": func() (store.Config, error) {
			cfg, err := config.LoadBackend(func(string) string { return "" })
			return cfg.Elasticsearch.Config, err
		},
	} {
		got, err := load()
		if err != nil {
			t.Fatal(err)
		}
		want := store.WithDefaults(store.Config{})
		// In code 0 is not waiting for an unreachable cluster
		// (ELASTICSEARCH_STARTUP_TIMEOUT).
		want.StartupTimeout = time.Minute
		for _, d := range testenv.DifferentFields(store.WithDefaults(got), want) {
			t.Errorf("%s: empty environment vs store.Config{}: %s", name, d)
		}
	}
}
