//go:build integration && chaos

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The nemesis of the chaos scenarios: the local clusters of
// deploy/local/services.sh (elasticsearch-cluster, nats-cluster), whose nodes it
// kills, pauses, stops and starts through that script, so that the faults are
// the ones an operator can inject by hand.

// clusters are the two clusters a chaos scenario runs against.
type clusters struct {
	script string   // services.sh
	es     []string // each Elasticsearch node's URL, node 1 first
	nats   []string // each NATS node's URL
}

// servicesScript is deploy/local/services.sh of this repository, or CHAOS_SERVICES.
func servicesScript(t *testing.T) string {
	if s := os.Getenv("CHAOS_SERVICES"); s != "" {
		return s
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "deploy", "local", "services.sh")
}

// chaosClusters reads the clusters' URLs that `services.sh with
// elasticsearch-cluster nats-cluster` exports, and checks that every node
// answers. Without them the scenario cannot run: under CI that is a failure, by
// hand a skip that says what to start.
func chaosClusters(t *testing.T) *clusters {
	t.Helper()
	c := &clusters{script: servicesScript(t)}
	esURLs, natsURLs := os.Getenv("ELASTICSEARCH_CLUSTER_URLS"), os.Getenv("NATS_CLUSTER_URLS")
	fail := t.Skipf
	if os.Getenv("CI") != "" {
		fail = t.Fatalf
	}
	if esURLs == "" || natsURLs == "" {
		fail("ELASTICSEARCH_CLUSTER_URLS and NATS_CLUSTER_URLS are not set: run `make chaos`, or `%s up elasticsearch-cluster nats-cluster` and export what it writes to its env file", c.script)
	}
	c.es, c.nats = strings.Split(esURLs, ","), strings.Split(natsURLs, ",")
	if len(c.es) != 3 || len(c.nats) != 3 {
		fail("the chaos scenarios need clusters of 3 nodes; ELASTICSEARCH_CLUSTER_URLS=%s NATS_CLUSTER_URLS=%s", esURLs, natsURLs)
	}
	if h := c.health(); h.Status != "green" || h.Nodes != 3 {
		fail("the Elasticsearch cluster at %s is not a green cluster of 3 nodes: %+v", esURLs, h)
	}
	return c
}

// services runs services.sh with args and returns its standard output.
func (c *clusters) services(t *testing.T, args ...string) string {
	t.Helper()
	start := time.Now()
	out, err := exec.Command(c.script, args...).Output()
	if err != nil {
		var stderr string
		if exit, ok := err.(*exec.ExitError); ok {
			stderr = string(exit.Stderr)
		}
		t.Fatalf("services.sh %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	t.Logf("services.sh %s (%s)", strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond))
	return string(out)
}

// esNode acts on Elasticsearch node n (1-3): kill, term, stop, cont, start.
func (c *clusters) esNode(t *testing.T, n int, action string) {
	t.Helper()
	c.services(t, "node", "elasticsearch-cluster", strconv.Itoa(n), action)
}

// natsNode acts on NATS node n (1-3).
func (c *clusters) natsNode(t *testing.T, n int, action string) {
	t.Helper()
	c.services(t, "node", "nats-cluster", strconv.Itoa(n), action)
}

// esMaster is the number of the elected master.
func (c *clusters) esMaster(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(c.services(t, "leader", "elasticsearch-cluster")))
	if err != nil {
		t.Fatalf("services.sh leader elasticsearch-cluster: %v", err)
	}
	return n
}

// esNodeNumber is the number of the node named esN.
func esNodeNumber(name string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(name, "es"))
	return n
}

// shardNodes lists the nodes holding a copy of the shards of indices: those with a
// primary first. Faults aimed at them are the ones the data feels.
func (c *clusters) shardNodes(t *testing.T, indices string) []int {
	t.Helper()
	var shards []struct{ Node, Prirep string }
	if err := c.getJSON("/_cat/shards/"+indices+"?format=json&h=node,prirep", &shards); err != nil {
		t.Fatalf("shards of %s: %v", indices, err)
	}
	var primaries, replicas []int
	for _, s := range shards {
		n := esNodeNumber(s.Node)
		if n == 0 {
			continue
		}
		if s.Prirep == "p" {
			primaries = append(primaries, n)
		} else {
			replicas = append(replicas, n)
		}
	}
	var out []int
	for _, n := range append(primaries, replicas...) {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// dataNodeNotMaster picks a node that holds a copy of the indices' shards, a
// primary if it can, and is not the elected master.
func (c *clusters) dataNodeNotMaster(t *testing.T, indices string) int {
	t.Helper()
	master := c.esMaster(t)
	for _, n := range c.shardNodes(t, indices) {
		if n != master {
			return n
		}
	}
	return master%3 + 1
}

type clusterHealth struct {
	Status string `json:"status"`
	Nodes  int    `json:"number_of_nodes"`
}

// health asks each node in turn for the cluster health: any that answers speaks
// for the cluster.
func (c *clusters) health() clusterHealth {
	var h clusterHealth
	if err := c.getJSON("/_cluster/health", &h); err != nil {
		return clusterHealth{Status: "unreachable"}
	}
	return h
}

// green is the health of a whole cluster: every node in, every shard copied.
func (c *clusters) green() bool {
	h := c.health()
	return h.Status == "green" && h.Nodes == len(c.es)
}

// getJSON GETs path of the first node that answers 200.
func (c *clusters) getJSON(path string, out any) error {
	client := http.Client{Timeout: 3 * time.Second}
	var last error
	for _, u := range c.es {
		res, err := client.Get(u + path)
		if err != nil {
			last = err
			continue
		}
		err = json.NewDecoder(res.Body).Decode(out)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			last = fmt.Errorf("%s%s: %s", u, path, res.Status)
			continue
		}
		return err
	}
	return last
}

// streamLeader is the number of the NATS node that leads stream (n1 → 1).
func (c *chaos) streamLeader() int {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	s, err := c.h.js.Stream(ctx, c.stream)
	if err != nil {
		c.t.Fatalf("stream %s: %v", c.stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		c.t.Fatalf("stream %s info: %v", c.stream, err)
	}
	n, _ := strconv.Atoi(strings.TrimPrefix(info.Cluster.Leader, "n"))
	if n < 1 || n > 3 {
		c.t.Fatalf("stream %s is led by %q, not a node of the cluster (n1-n3)", c.stream, info.Cluster.Leader)
	}
	return n
}
