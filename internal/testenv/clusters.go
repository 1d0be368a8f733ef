package testenv

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Clusters are the local clusters of deploy/local/services.sh, started for one
// test: elasticsearch-cluster (es1..es3) and nats-cluster (n1..n3), in a state
// directory of the test's own, stopped when it ends. A fault injector kills,
// pauses and restarts their nodes with Node, and finds the leader with Leader.
type Clusters struct {
	t     testing.TB
	root  string
	base  []string          // the environment of every services.sh call
	State string            // the state directory: each node's data and log
	Env   map[string]string // what services.sh wrote to its env file: ELASTICSEARCH_CLUSTER_URLS, NATS_CLUSTER_URLS, …
}

// clusterPorts are the variables that say which ports services.sh gives the
// clusters' nodes, one per node each.
var clusterPorts = []string{"ES_CLUSTER_PORTS", "ES_CLUSTER_TRANSPORT_PORTS", "NATS_CLUSTER_PORTS", "NATS_CLUSTER_ROUTE_PORTS", "NATS_CLUSTER_MONITOR_PORTS"}

// ClusterPortsPinned says whether the environment names the clusters' ports
// (ES_CLUSTER_PORTS, …), which tests then share: such tests must not run in
// parallel. Otherwise StartClusters takes free ports.
func ClusterPortsPinned() bool {
	for _, name := range clusterPorts {
		if os.Getenv(name) != "" {
			return true
		}
	}
	return false
}

// StartClusters starts services (elasticsearch-cluster, nats-cluster) through
// services.sh, all nodes at once, with env (NAME=value) added to the
// environment, and stops them when the test ends. A cluster that does not
// start fails the test, never skips it, with what services.sh said.
func StartClusters(t testing.TB, env []string, services ...string) *Clusters {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	c := &Clusters{t: t, root: root, State: t.TempDir()}
	c.base = []string{"SERVICES_STATE=" + c.State}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		// The test's own clusters, never ones named by the caller's environment.
		if name != "SERVICES_STATE" && !strings.HasPrefix(name, "ELASTICSEARCH_CLUSTER_") && name != "NATS_CLUSTER_URLS" && name != "ES_CLUSTER_SECURITY" {
			c.base = append(c.base, kv)
		}
	}
	for _, name := range clusterPorts {
		if os.Getenv(name) == "" {
			c.base = append(c.base, name+"="+freePorts(t, 3))
		}
	}
	c.base = append(c.base, env...)
	t.Cleanup(func() {
		cmd := exec.Command("bash", filepath.Join(c.root, "deploy/local/services.sh"), "down")
		cmd.Env = c.base
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("services.sh down: %v\n%s", err, out)
		}
	})
	began := time.Now()
	c.Run(append([]string{"up"}, services...)...)
	t.Logf("%s ready in %s", strings.Join(services, " and "), time.Since(began).Round(time.Second))
	c.Env = readEnv(t, filepath.Join(c.State, "env"))
	return c
}

// Run runs services.sh with args and returns its standard output, failing the
// test with everything it said if it fails.
func (c *Clusters) Run(args ...string) string {
	c.t.Helper()
	cmd := exec.Command("bash", append([]string{filepath.Join(c.root, "deploy/local/services.sh")}, args...)...)
	cmd.Env = c.base
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("services.sh %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// Node acts on node n (1-based) of service: kill (SIGKILL), term (a clean stop),
// stop (SIGSTOP), cont (SIGCONT) or start (until it has joined the cluster again).
func (c *Clusters) Node(service string, n int, action string) {
	c.t.Helper()
	c.Run("node", service, strconv.Itoa(n), action)
}

// Leader is the number of the node that leads service: the elected master of
// elasticsearch-cluster, the JetStream meta leader of nats-cluster.
func (c *Clusters) Leader(service string) int {
	c.t.Helper()
	out := strings.TrimSpace(c.Run("leader", service))
	n, err := strconv.Atoi(out)
	if err != nil {
		c.t.Fatalf("services.sh leader %s printed %q; want a node number", service, out)
	}
	return n
}

// NodeState is what services.sh nodes says of node n of service: running,
// paused or gone.
func (c *Clusters) NodeState(service string, n int) string {
	c.t.Helper()
	prefix := map[string]string{"elasticsearch-cluster": "es", "nats-cluster": "n"}[service]
	for line := range strings.Lines(c.Run("nodes", service)) {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == prefix+strconv.Itoa(n) {
			return f[2]
		}
	}
	c.t.Fatalf("services.sh nodes %s names no node %d", service, n)
	return ""
}

func freePorts(t testing.TB, n int) string {
	seen := map[int]bool{}
	var ports []string
	for len(ports) < n {
		p := PortOf(t, FreeAddr(t))
		if !seen[p] {
			seen[p] = true
			ports = append(ports, strconv.Itoa(p))
		}
	}
	return strings.Join(ports, ",")
}

func readEnv(t testing.TB, path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the env file services.sh writes: %v", err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}
