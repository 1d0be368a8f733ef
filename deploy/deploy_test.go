// Package deploy holds what operators touch; this test checks, without a Docker
// engine, what can be checked of the container setup.
package deploy

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"

	"github.com/annotated-data/pipeline/internal/config"
)

type compose struct {
	Services map[string]struct {
		Image       string         `yaml:"image"`
		Build       any            `yaml:"build"`
		EnvFile     any            `yaml:"env_file"`
		Environment map[string]any `yaml:"environment"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
	} `yaml:"services"`
}

func readCompose(t *testing.T, name string) compose {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", name))
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("%s does not parse: %v", name, err)
	}
	return c
}

// The variables each of our services' binaries reads, from the configuration code.
var readBy = map[string][]string{
	"webserver": config.Names(config.IngesterVars(&config.Ingester{})),
	"backend":   config.Names(config.BackendVars(&config.Backend{})),
}

func TestComposeServicesArePinnedHealthCheckedAndOrdered(t *testing.T) {
	c := readCompose(t, "docker-compose.yml")
	for _, want := range []string{"nats", "elasticsearch", "webserver", "backend"} {
		if _, ok := c.Services[want]; !ok {
			t.Errorf("service %s is missing", want)
		}
	}
	pinned := regexp.MustCompile(`^[^:]+:[0-9][^:]*$`)
	// A one-shot service (it prepares something and exits) is waited for until it
	// completed; every long-running one has a healthcheck and is waited for until
	// healthy.
	oneShot := map[string]bool{}
	for _, s := range c.Services {
		for dep, d := range s.DependsOn {
			if d.Condition == "service_completed_successfully" {
				oneShot[dep] = true
			}
		}
	}
	for name, s := range c.Services {
		if s.Build == nil && !pinned.MatchString(s.Image) {
			t.Errorf("service %s: image %q is neither built nor pinned to a version tag", name, s.Image)
		}
		if !oneShot[name] && (s.Healthcheck == nil || len(s.Healthcheck.Test) == 0) {
			t.Errorf("service %s has no healthcheck", name)
		}
		for dep, d := range s.DependsOn {
			if want := "service_healthy"; d.Condition != want && !(oneShot[dep] && d.Condition == "service_completed_successfully") {
				t.Errorf("service %s waits for %s with condition %q, want %s", name, dep, d.Condition, want)
			}
			if oneShot[dep] && d.Condition != "service_completed_successfully" {
				t.Errorf("service %s waits for the one-shot %s with condition %q, want service_completed_successfully", name, dep, d.Condition)
			}
		}
	}
}

func TestEnvFilesNameOnlyVariablesTheBinariesRead(t *testing.T) {
	c := readCompose(t, "docker-compose.yml")
	for service, names := range readBy {
		s := c.Services[service]
		files, _ := s.EnvFile.(string)
		if files == "" {
			t.Errorf("service %s has no env_file", service)
			continue
		}
		for _, v := range envFileNames(t, filepath.Join("..", files)) {
			if !slices.Contains(names, v) {
				t.Errorf("%s sets %s, which the %s does not read", files, v, service)
			}
		}
		for v := range s.Environment {
			if !slices.Contains(names, v) {
				t.Errorf("docker-compose.yml sets %s for %s, which it does not read", v, service)
			}
		}
	}
}

// envFileNames returns the variable names an env file sets, commented-out examples
// included: an example an operator uncomments must work too.
func envFileNames(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	assignment := regexp.MustCompile(`^#?\s*([A-Z][A-Z0-9_]*)=`)
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := assignment.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			names = append(names, m[1])
		}
	}
	if len(names) == 0 {
		t.Errorf("%s sets no variables", path)
	}
	return names
}

func TestDockerfilesBuildOnTheGoVersionOfGoMod(t *testing.T) {
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("no go directive in go.mod")
	}
	want := string(m[1])
	for _, df := range []string{"Dockerfile.webserver", "Dockerfile.backend"} {
		raw, err := os.ReadFile(filepath.Join("..", df))
		if err != nil {
			t.Fatal(err)
		}
		from := regexp.MustCompile(`(?m)^FROM golang:(\d+\.\d+)`).FindSubmatch(raw)
		if from == nil || string(from[1]) != want {
			t.Errorf("%s builds on golang:%s, go.mod says go %s", df, from, want)
		}
		if !regexp.MustCompile(`(?m)^USER nonroot`).Match(raw) {
			t.Errorf("%s does not run as a non-root user", df)
		}
	}
}
