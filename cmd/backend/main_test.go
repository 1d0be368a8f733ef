package main

import (
	"context"
	"strings"
	"testing"

	"github.com/annotated-data/pipeline/internal/testenv"
)

func TestBadConfigurationIsRefusedNamingEveryBadVariable(t *testing.T) {
	env := map[string]string{"TLS_MODE": "file", "API_PAGE_SIZE": "0", "ELASTICSEARCH_URL": "https://user:secret-pw@es:9200"}
	out := &testenv.Buffer{}
	err := run(context.Background(), []string{"backend"}, func(k string) string { return env[k] }, out)
	if err == nil {
		t.Fatal("started with bad variables")
	}
	for _, name := range []string{"TLS_CERT_FILE", "TLS_KEY_FILE", "API_PAGE_SIZE", "ELASTICSEARCH_URL"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
	if strings.Contains(err.Error()+out.String(), "secret-pw") {
		t.Errorf("the password in the address was echoed:\n%v", err)
	}
}

func TestAnUnreachableStoreWithNoPatienceStopsTheStartAtOnce(t *testing.T) {
	env := map[string]string{"ELASTICSEARCH_URL": "http://" + testenv.FreeAddr(t), "ELASTICSEARCH_STARTUP_TIMEOUT": "0s"}
	err := run(context.Background(), []string{"backend"}, func(k string) string { return env[k] }, &testenv.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "elasticsearch unreachable at "+env["ELASTICSEARCH_URL"]) {
		t.Errorf("run = %v, want it to name the unreachable address", err)
	}
}
