//go:build integration

package main

import (
	"testing"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// Refusals run the backend in-process, through run, as main does.
func TestElasticsearchRefusalsStopTheStartAtOnceWithAMessageNamingTheProblem(t *testing.T) {
	for _, r := range testenv.ElasticsearchRefusals(t, "") {
		t.Run(r.Name, func(t *testing.T) { r.Check(t, "backend", run) })
	}
}
