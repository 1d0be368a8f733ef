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

// The README's short table of the variables most often set gives each binary's
// default as the code has it, or — for a binary that does not read the variable.
func TestREADMEGivesTheCodesDefaultsOfTheCommonVariables(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(raw), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no ## Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	header := "| Variable | webserver | backend | Meaning |"
	if !strings.Contains(section, header) {
		t.Fatalf("README.md's Configuration section has no table headed %s", header)
	}
	binaries := []struct {
		name     string
		defaults map[string]string
	}{
		{"webserver", markdownDefaults(config.IngesterVars(&config.Ingester{}))},
		{"backend", markdownDefaults(config.BackendVars(&config.Backend{}))},
	}
	rows := 0
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, " | ")
		if len(cells) < 4 || !strings.HasPrefix(cells[0], "| `") {
			continue
		}
		rows++
		name := strings.Trim(cells[0], "| `")
		for i, b := range binaries {
			got := cells[1+i]
			want, reads := b.defaults[name]
			if !reads {
				want = "—"
			}
			if got != want {
				t.Errorf("README.md gives %s's default for the %s as %s; the code says %s", name, b.name, got, want)
			}
		}
	}
	if rows == 0 {
		t.Error("README.md's Configuration table has no rows")
	}
}

// markdownDefaults gives each variable's default as WriteMarkdown writes it.
func markdownDefaults(vars []config.Var) map[string]string {
	m := map[string]string{}
	for _, v := range vars {
		m[v.Name] = "`" + v.Default + "`"
		if v.Default == "" {
			m[v.Name] = "(none)"
		}
	}
	return m
}
