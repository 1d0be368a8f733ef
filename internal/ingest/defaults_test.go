package ingest_test

import (
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/ingest"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// Each default lives beside its field, in withDefaults; the environment table
// (config) repeats it for --help and the README. An empty environment must
// configure what the zero Config gets, or the two have drifted apart. Where zero
// means "none" in code, the environment's default is the only one there is, and
// is named here.
func TestAnEmptyEnvironmentConfiguresTheDefaultsBesideTheFields(t *testing.T) {
	cfg, err := config.LoadIngester(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	want := ingest.WithDefaults(ingest.Config{})
	// In code 0 is no bound; the environment bounds event times
	// (TIMESTAMP_MAX_PAST, TIMESTAMP_MAX_FUTURE).
	want.TimestampMaxPast, want.TimestampMaxFuture = 30*24*time.Hour, 24*time.Hour
	for _, d := range testenv.DifferentFields(ingest.WithDefaults(cfg.Ingest), want) {
		t.Errorf("empty environment vs ingest.Config{}: %s", d)
	}
}
