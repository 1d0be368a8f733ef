package deploy

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/annotated-data/pipeline/internal/config"
)

var update = flag.Bool("update", false, "rewrite the variable tables of docs/operating.md from the code")

// The tables of environment variables in docs/operating.md are the code's,
// verbatim: between <!-- NAME-env --> and <!-- /NAME-env --> markers. Run
// `go test ./deploy -run EveryVariable -update` after changing a variable.
func TestDocsListEveryVariableWithItsDefault(t *testing.T) {
	const path = "../docs/operating.md"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
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
		i, j := strings.Index(doc, open), strings.Index(doc, end)
		if i < 0 || j < i {
			t.Errorf("%s has no %s…%s section for the %s's variables", path, strings.TrimSpace(open), end, b.name)
			continue
		}
		got := doc[i+len(open) : j]
		if got == table.String() {
			continue
		}
		if *update {
			doc = doc[:i+len(open)] + table.String() + doc[j:]
			continue
		}
		t.Errorf("%s's table of the %s's variables differs from the code; run `go test ./deploy -run EveryVariable -update`", path, b.name)
	}
	if *update {
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
