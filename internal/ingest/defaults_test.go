package ingest_test

import (
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/ingest"
	"github.com/annotated-data/pipeline/internal/testenv"
)

func TestAnEmptyEnvironmentConfiguresTheDefaultsBesideTheFields(t *testing.T) {
	cfg, err := config.LoadIngester(testenv.EmptyEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := ingest.WithDefaults(ingest.Config{})
	// 0 is no bound; the environment's is TIMESTAMP_MAX_PAST and _FUTURE.
	want.TimestampMaxPast, want.TimestampMaxFuture = 30*24*time.Hour, 24*time.Hour
	testenv.SameDefaults(t, ingest.WithDefaults(cfg.Ingest), want)
}
