package main

import (
	"context"
	"io"
	"testing"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// Refusals run the publisher in-process, through run, as main does.
func TestNATSRefusalsStopTheStartAtOnceWithAMessageNamingTheProblem(t *testing.T) {
	publisher := func(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
		return run(ctx, args, getenv, stdout, stdout)
	}
	for _, r := range testenv.NATSRefusals(t) {
		t.Run(r.Name, func(t *testing.T) { r.Check(t, "publisher", publisher, "--count", "1", "--quiet") })
	}
}
