package main

import (
	"context"
	"strings"
	"testing"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// Refusals run the webserver in-process, through run, as main does.

func TestNATSRefusalsStopTheStartAtOnceWithAMessageNamingTheProblem(t *testing.T) {
	for _, r := range testenv.NATSRefusals(t) {
		t.Run(r.Name, func(t *testing.T) { r.Check(t, "webserver", run) })
	}
}

func TestBadConfigurationIsRefusedNamingEveryBadVariable(t *testing.T) {
	env := map[string]string{"BULK_WORKERS": "0", "NATS_URL": "http://nats:4222", "LOG_LEVEL": "loud"}
	out := &testenv.Buffer{}
	err := run(context.Background(), []string{"webserver"}, func(k string) string { return env[k] }, out)
	if err == nil {
		t.Fatal("started with three bad variables")
	}
	for _, name := range []string{"configuration (see --help)", "BULK_WORKERS", "NATS_URL", "LOG_LEVEL"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
}

func TestHelpListsEveryVariableAndVersionNamesTheBuild(t *testing.T) {
	out := &testenv.Buffer{}
	if err := run(context.Background(), []string{"webserver", "--help"}, func(string) string { return "" }, out); err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"NATS_URL", "ELASTICSEARCH_URL", "BULK_MAX_DOCS", "ADMIN_ADDR"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %s:\n%s", want, out)
		}
	}
	out = &testenv.Buffer{}
	if err := run(context.Background(), []string{"webserver", "--version"}, func(string) string { return "" }, out); err != nil ||
		strings.TrimSpace(out.String()) != "webserver dev unknown" {
		t.Errorf("--version = %q, %v; want %q", out, err, "webserver dev unknown")
	}
}
