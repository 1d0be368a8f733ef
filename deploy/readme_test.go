package deploy

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/annotated-data/pipeline/internal/config"
)

var update = flag.Bool("update", false, "rewrite the README's variable tables from the code")

// The README's tables of environment variables are the code's, verbatim: between
// <!-- NAME-env --> and <!-- /NAME-env --> markers. Run
// `go test ./deploy -run README -update` after changing a variable.
func TestREADMEListsEveryVariableWithItsDefault(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	for _, b := range []struct {
		name string
		vars []config.Var
	}{
		{"webserver", config.IngesterVars(&config.Ingester{})},
		{"backend", config.BackendVars(&config.Backend{})},
	} {
		var table bytes.Buffer
		config.WriteMarkdown(&table, b.vars)
		open, end := "<!-- "+b.name+"-env -->\n", "<!-- /"+b.name+"-env -->"
		i, j := strings.Index(readme, open), strings.Index(readme, end)
		if i < 0 || j < i {
			t.Errorf("README.md has no %s…%s section for the %s's variables", strings.TrimSpace(open), end, b.name)
			continue
		}
		got := readme[i+len(open) : j]
		if got == table.String() {
			continue
		}
		if *update {
			readme = readme[:i+len(open)] + table.String() + readme[j:]
			continue
		}
		t.Errorf("README.md's table of the %s's variables differs from the code; run `go test ./deploy -run README -update`", b.name)
	}
	if *update {
		if err := os.WriteFile("../README.md", []byte(readme), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
