package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
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

// ElasticsearchPID is the process id of the local node `make services` started,
// if esURL is that node and it runs on this machine, else 0: benchmarks read its
// processor time.
func ElasticsearchPID(esURL string) int {
	root, err := repoRoot()
	if err != nil || servicesValue("ELASTICSEARCH_URL") != esURL {
		return 0
	}
	raw, err := os.ReadFile(filepath.Join(root, ".services", "elasticsearch.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return 0
	}
	return pid
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
	deleteAtEnd(t, esURL, prefix)
	return prefix
}

// NestedIndexPrefix returns <outer>-<name>: the prefix of a second pipeline whose
// indices also match <outer>-*, as annotations-lidar beside annotations. Its
// indices and template are deleted when the test ends.
func NestedIndexPrefix(t testing.TB, esURL, outer, name string) string {
	t.Helper()
	prefix := outer + "-" + name
	deleteAtEnd(t, esURL, prefix)
	return prefix
}

func deleteAtEnd(t testing.TB, esURL, prefix string) {
	t.Cleanup(func() {
		for _, path := range []string{"/" + prefix + "-*", "/_index_template/" + prefix} {
			req, _ := http.NewRequest(http.MethodDelete, esURL+path, nil)
			if res, err := http.DefaultClient.Do(req); err == nil {
				res.Body.Close()
			}
		}
	})
}

// Refresh makes everything indexed so far in the indices matching pattern visible
// to search.
func Refresh(t testing.TB, esURL, pattern string) {
	t.Helper()
	res, err := http.Post(esURL+"/"+pattern+"/_refresh", "application/json", nil)
	if err != nil {
		t.Fatalf("refresh %s: %v", pattern, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("refresh %s: %s", pattern, res.Status)
	}
}

// DocumentIDs returns how many times each document id occurs in the indices
// matching pattern, reading them all through a point in time.
func DocumentIDs(t testing.TB, esURL, pattern string) map[string]int {
	t.Helper()
	Refresh(t, esURL, pattern)
	var pit struct {
		ID     string       `json:"id"`
		Shards shardsFailed `json:"_shards"`
	}
	ESJSON(t, http.MethodPost, esURL+"/"+pattern+"/_pit?keep_alive=1m", nil, &pit)
	pit.Shards.check(t, "open a point in time on "+pattern)
	defer ESJSON(t, http.MethodDelete, esURL+"/_pit", map[string]any{"id": pit.ID}, nil)

	ids := map[string]int{}
	var after []any
	for {
		req := map[string]any{
			"size":    10000,
			"_source": false,
			"pit":     map[string]any{"id": pit.ID, "keep_alive": "1m"},
			"sort":    []any{map[string]any{"_shard_doc": "asc"}},
		}
		if after != nil {
			req["search_after"] = after
		}
		var page struct {
			PITID  string       `json:"pit_id"`
			Shards shardsFailed `json:"_shards"`
			Hits   struct {
				Hits []struct {
					ID   string `json:"_id"`
					Sort []any  `json:"sort"`
				} `json:"hits"`
			} `json:"hits"`
		}
		ESJSON(t, http.MethodPost, esURL+"/_search", req, &page)
		page.Shards.check(t, "read the ids in "+pattern)
		if len(page.Hits.Hits) == 0 {
			return ids
		}
		for _, h := range page.Hits.Hits {
			ids[h.ID]++
		}
		pit.ID = page.PITID
		after = page.Hits.Hits[len(page.Hits.Hits)-1].Sort
	}
}

// shardsFailed is the _shards part of a search's answer. A shard that failed
// leaves its documents out of a 200: a test would count them missing, or miss
// one stored twice.
type shardsFailed struct {
	Total  int `json:"total"`
	Failed int `json:"failed"`
}

func (s shardsFailed) check(t testing.TB, what string) {
	t.Helper()
	if s.Failed > 0 {
		t.Fatalf("%s: Elasticsearch answered for only %d of %d shards", what, s.Total-s.Failed, s.Total)
	}
}

// ESJSON sends a request to Elasticsearch and decodes its JSON answer into out
// (if not nil), failing the test unless the answer is 2xx and, for a bulk
// request, every item succeeded. body is nil, raw []byte (sent as NDJSON when it
// ends in a newline, as a bulk body does, else as JSON), or a value to marshal.
func ESJSON(t testing.TB, method, url string, body, out any) {
	t.Helper()
	var raw []byte
	contentType := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
		if bytes.HasSuffix(b, []byte("\n")) {
			contentType = "application/x-ndjson"
		}
	default:
		var err error
		if raw, err = json.Marshal(body); err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	req.Header.Set("Content-Type", contentType)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	answer, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read the answer: %v", method, url, err)
	}
	if res.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s %s", method, url, res.Status, answer)
	}
	var bulk struct {
		Errors bool `json:"errors"`
	}
	if strings.Contains(url, "/_bulk") && json.Unmarshal(answer, &bulk) == nil && bulk.Errors {
		t.Fatalf("%s %s: some items failed: %s", method, url, answer)
	}
	if out != nil {
		if err := json.Unmarshal(answer, out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, url, err)
		}
	}
}

// OpenSearchContexts is the number of search contexts (points in time, mostly)
// that Elasticsearch holds open on indices (its URL and an index pattern, such
// as http://127.0.0.1:9200/test-x-*), once closing has had a second to land: it
// returns as soon as none is left.
func OpenSearchContexts(t testing.TB, indices string) int {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		var stats struct {
			All struct {
				Total struct {
					Search struct {
						OpenContexts int `json:"open_contexts"`
					} `json:"search"`
				} `json:"total"`
			} `json:"_all"`
		}
		res, err := http.Get(indices + "/_stats/search")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(res.Body).Decode(&stats)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		n := stats.All.Total.Search.OpenContexts
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RedIndex creates index name with its one shard bound to a node that does not
// exist, so that the index, and the cluster, are red until heal deletes it (at
// the latest when the test ends). The node is shared, and ElasticsearchURL
// waits for yellow: keep the red spell to seconds.
func RedIndex(t testing.TB, esURL, name string) (heal func()) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, esURL+"/"+name+"?wait_for_active_shards=0",
		strings.NewReader(`{"settings":{"number_of_replicas":0,"index.routing.allocation.require._name":"no-such-node"}}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("create red index %s: %v", name, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("create red index %s: %s", name, res.Status)
	}
	var once sync.Once
	heal = func() {
		once.Do(func() {
			req, _ := http.NewRequest(http.MethodDelete, esURL+"/"+name, nil)
			if res, err := http.DefaultClient.Do(req); err == nil {
				res.Body.Close()
			}
		})
	}
	t.Cleanup(heal)
	return heal
}
