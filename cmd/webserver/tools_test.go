package main

import (
	"context"
	"strings"
	"testing"

	"github.com/annotated-data/pipeline/internal/testenv"
)

func TestAuditAndReplayEachHaveTheirOwnHelp(t *testing.T) {
	for _, tool := range []string{"audit", "replay"} {
		out := &testenv.Buffer{}
		if err := run(context.Background(), []string{"webserver", tool, "--help"}, func(string) string { return "" }, out); err != nil {
			t.Fatalf("%s --help: %v", tool, err)
		}
		for _, want := range []string{"Usage: webserver " + tool, "--from-seq", "Exit status", "NATS_URL", "ES_INDEX_PREFIX"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s --help does not mention %s:\n%s", tool, want, out)
			}
		}
	}
}

func TestAnAuditThatCannotRunExitsWithTwo(t *testing.T) {
	env := map[string]string{"NATS_URL": "nats://" + testenv.FreeAddr(t), "NATS_STARTUP_TIMEOUT": "0s"}
	for name, args := range map[string][]string{
		"unknown option":      {"--everything"},
		"two kinds of window": {"--since", "1h", "--from-seq", "3"},
		"no NATS":             {},
	} {
		err := run(context.Background(), append([]string{"webserver", "audit"}, args...), func(k string) string { return env[k] }, &testenv.Buffer{})
		if code := exitCode(err); err == nil || code != 2 {
			t.Errorf("%s: exit %d (%v), want 2", name, code, err)
		}
	}
}

func TestReplayNeedsAWindow(t *testing.T) {
	err := run(context.Background(), []string{"webserver", "replay"}, func(string) string { return "" }, &testenv.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "--from-seq") || !strings.Contains(err.Error(), "--since") {
		t.Errorf("replay without a window: %v; want an error naming --from-seq and --since", err)
	}
}

func TestSetupSecurityHasItsOwnHelpAndRefusesABadFileBeforeConnecting(t *testing.T) {
	out := &testenv.Buffer{}
	if err := run(context.Background(), []string{"webserver", "setup-security", "--help"}, func(string) string { return "" }, out); err != nil {
		t.Fatalf("setup-security --help: %v", err)
	}
	for _, want := range []string{"Usage: webserver setup-security", "--file", "--secrets", "deploy/elasticsearch-security.json", "Exit status"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("setup-security --help does not mention %s:\n%s", want, out)
		}
	}
	err := run(context.Background(), []string{"webserver", "setup-security", "--file", "/nonexistent/security.json"}, func(string) string { return "" }, &testenv.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/security.json") {
		t.Errorf("setup-security with a missing file: %v, want an error naming it", err)
	}
}
