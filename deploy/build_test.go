//go:build integration

package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The Dockerfiles' build command, run here, produces binaries that work and carry
// their version: what the images would contain.
func TestBinariesBuildWithTheDockerfilesFlags(t *testing.T) {
	for _, bin := range []string{"webserver", "backend"} {
		raw, err := os.ReadFile("../Dockerfile." + bin)
		if err != nil {
			t.Fatal(err)
		}
		line := regexp.MustCompile(`(?m)^RUN (?:--mount=\S+ )*(CGO_ENABLED=0 go build .*)$`).FindSubmatch(raw)
		if line == nil {
			t.Fatalf("Dockerfile.%s has no 'RUN CGO_ENABLED=0 go build' line", bin)
		}
		out := t.TempDir()
		cmdline := strings.NewReplacer("${VERSION}", "v9.9.9-test", "${COMMIT}", "abc1234", "/out/", out+"/").Replace(string(line[1]))
		cmd := exec.Command("sh", "-c", cmdline)
		cmd.Dir = ".."
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", cmdline, err, msg)
		}
		version, err := exec.Command(filepath.Join(out, bin), "--version").Output()
		if err != nil || strings.TrimSpace(string(version)) != bin+" v9.9.9-test abc1234" {
			t.Errorf("%s --version = %q, %v; want %q", bin, version, err, bin+" v9.9.9-test abc1234")
		}
		if _, err := os.Stat(filepath.Join(out, "healthcheck")); err != nil {
			t.Errorf("the %s image would lack its healthcheck binary: %v", bin, err)
		}
	}
}
