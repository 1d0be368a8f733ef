//go:build integration

package main

import (
	"testing"

	"github.com/annotated-data/pipeline/internal/testenv"
)

func TestElasticsearchRefusalsStopTheStartAtOnceWithAMessageNamingTheProblem(t *testing.T) {
	nats := testenv.StartNATS(t) // the webserver connects to NATS first
	for _, r := range testenv.ElasticsearchRefusals(t, nats.URL()) {
		t.Run(r.Name, func(t *testing.T) { r.Check(t, "webserver", run) })
	}
}
