package config

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseFlagsHandlesHelpVersionAndStrayArguments(t *testing.T) {
	p := Program{Name: "webserver", Summary: "ingests.", Version: "v1.2.3", Commit: "abc1234"}
	vars := IngesterVars(&Ingester{})
	tests := []struct {
		args    []string
		run     bool
		wantErr bool
		output  string
	}{
		{[]string{"webserver"}, true, false, ""},
		{[]string{"webserver", "--version"}, false, false, "webserver v1.2.3 abc1234\n"},
		{[]string{"webserver", "--help"}, false, false, "NATS_URL"},
		{[]string{"webserver", "-h"}, false, false, "BULK_MAX_DOCS"},
		{[]string{"webserver", "serve"}, false, true, "Usage: webserver"},
		{[]string{"webserver", "--nope"}, false, true, "flag provided but not defined"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		run, err := ParseFlags(tt.args, &out, p, vars)
		if run != tt.run || (err != nil) != tt.wantErr || !strings.Contains(out.String(), tt.output) {
			t.Errorf("ParseFlags(%q) = %v, %v with output %q; want run=%v, error=%v, output containing %q",
				tt.args, run, err, out.String(), tt.run, tt.wantErr, tt.output)
		}
	}
}
