package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// ServicesFile is where `make services` writes the URLs of the services it started,
// relative to the repository root.
const ServicesFile = ".services/env"

// ElasticsearchURL returns the address of a running Elasticsearch node: the one in
// ELASTICSEARCH_URL, else the one `make services` recorded. A test that needs
// Elasticsearch fails, never skips, when there is none, and says how to start one.
func ElasticsearchURL(t testing.TB) string {
	t.Helper()
	url, from := os.Getenv("ELASTICSEARCH_URL"), "ELASTICSEARCH_URL"
	if url == "" {
		url, from = servicesValue("ELASTICSEARCH_URL"), ServicesFile
	}
	if url == "" {
		t.Fatalf("no Elasticsearch for this integration test: run it through `make test`, or start one with `make services` (or set ELASTICSEARCH_URL)")
	}
	url = strings.Split(url, ",")[0]
	if err := waitHealthy(url, 30*time.Second); err != nil {
		t.Fatalf("Elasticsearch at %s (from %s) is not usable: %v; start it with `make services`", url, from, err)
	}
	return url
}

func waitHealthy(url string, patience time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/_cluster/health?wait_for_status=yellow&timeout=5s", nil)
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK && res.Header.Get("X-Elastic-Product") == "Elasticsearch" {
				return nil
			}
			err = fmt.Errorf("cluster health answered %s", res.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return last
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// servicesValue reads one KEY=value line of the services file at the repository root.
func servicesValue(key string) string {
	root, err := repoRoot()
	if err != nil {
		return ""
	}
	f, err := os.Open(filepath.Join(root, ServicesFile))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && k == key {
			return v
		}
	}
	return ""
}

// repoRoot walks up from the working directory to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

var notIndexChar = regexp.MustCompile(`[^a-z0-9]+`)

// IndexPrefix returns an index prefix no other test uses, so tests can share one
// Elasticsearch node. Its indices and template are deleted when the test ends.
func IndexPrefix(t testing.TB, esURL string) string {
	t.Helper()
	name := strings.Trim(notIndexChar.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 40 {
		name = name[:40]
	}
	var b [4]byte
	rand.Read(b[:])
	prefix := "test-" + name + "-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		for _, path := range []string{"/" + prefix + "-*", "/_index_template/" + prefix} {
			req, _ := http.NewRequest(http.MethodDelete, esURL+path, nil)
			if res, err := http.DefaultClient.Do(req); err == nil {
				res.Body.Close()
			}
		}
	})
	return prefix
}
