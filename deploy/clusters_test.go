//go:build integration && chaos

package deploy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// Run by `make chaos`, not `make test`: six more Elasticsearch nodes would double
// the processor time of a suite that must stay short.
//
// The clusters `make chaos` injects its faults into: three Elasticsearch nodes and
// three NATS servers started by services.sh, whose node command kills a node and
// starts it again. With the leader of each killed, both go on serving: Elasticsearch
// yellow (a replica missing) with every document readable and writes taken, the R3
// stream taking publishes; with the node back, Elasticsearch is green again and the
// stream has all its replicas current. A paused node shows as paused.
func TestClustersServeWithTheirLeaderKilledAndHealWhenItIsBack(t *testing.T) {
	if !testenv.ClusterPortsPinned() {
		t.Parallel()
	}
	c := testenv.StartClusters(t, nil, "elasticsearch-cluster", "nats-cluster")
	esURLs := strings.Split(c.Env["ELASTICSEARCH_CLUSTER_URLS"], ",")
	natsURLs := c.Env["NATS_CLUSTER_URLS"]
	if len(esURLs) != 3 || len(strings.Split(natsURLs, ",")) != 3 {
		t.Fatalf("services.sh wrote ELASTICSEARCH_CLUSTER_URLS=%q and NATS_CLUSTER_URLS=%q; want three URLs each",
			c.Env["ELASTICSEARCH_CLUSTER_URLS"], natsURLs)
	}
	if h := clusterHealth(t, esURLs[0], ""); h.Nodes != 3 || h.Status != "green" {
		t.Fatalf("Elasticsearch cluster after up: %d nodes, %s; want 3, green", h.Nodes, h.Status)
	}

	// An index with a replica of each shard, spread over the nodes.
	const index = "cluster-test"
	testenv.ESJSON(t, http.MethodPut, esURLs[0]+"/"+index+"?wait_for_active_shards=all",
		map[string]any{"settings": map[string]any{"number_of_shards": 3, "number_of_replicas": 1}}, nil)
	indexDocuments(t, esURLs[0], index, 0, 100)

	js := testenv.JetStream(t, natsURLs)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CLUSTER_TEST", Subjects: []string{"cluster-test.>"}, Replicas: 3})
	if err != nil {
		t.Fatalf("create an R3 stream on the NATS cluster: %v", err)
	}
	publish(ctx, t, js, 0, 10)

	esMaster, natsLeader := c.Leader("elasticsearch-cluster"), c.Leader("nats-cluster")
	c.Node("elasticsearch-cluster", esMaster, "kill")
	c.Node("nats-cluster", natsLeader, "kill")
	if state := c.NodeState("elasticsearch-cluster", esMaster); state != "gone" {
		t.Errorf("services.sh nodes says es%d is %s after it was killed, want gone", esMaster, state)
	}

	survivor := esURLs[0]
	if esMaster == 1 {
		survivor = esURLs[1]
	}
	// Yellow rather than green: the lost node's replicas wait for it (for
	// index.unassigned.node_left.delayed_timeout, 1m) before being made again.
	if h := clusterHealth(t, survivor, "wait_for_nodes=2&wait_for_status=yellow&timeout=90s"); h.Nodes != 2 || h.Status != "yellow" || h.TimedOut {
		t.Errorf("Elasticsearch with es%d killed: %d nodes, %s (timed out: %v); want 2, yellow", esMaster, h.Nodes, h.Status, h.TimedOut)
	}
	if n, failed := countDocuments(t, survivor, index); n != 100 || failed != 0 {
		t.Errorf("count with es%d killed: %d documents, %d shards failed; want 100 and 0", esMaster, n, failed)
	}
	indexDocuments(t, survivor, index, 100, 50)
	if after := c.Leader("elasticsearch-cluster"); after == esMaster {
		t.Errorf("es%d, killed, is still named the master", esMaster)
	}
	publish(ctx, t, js, 10, 10)
	if info, err := stream.Info(ctx); err != nil || info.State.Msgs != 20 {
		t.Errorf("the R3 stream with n%d killed: %v, %+v; want 20 messages", natsLeader, err, info)
	}

	c.Node("elasticsearch-cluster", esMaster, "start")
	c.Node("nats-cluster", natsLeader, "start")
	if h := clusterHealth(t, survivor, "wait_for_nodes=3&wait_for_status=green&timeout=120s"); h.Nodes != 3 || h.Status != "green" || h.TimedOut {
		t.Errorf("Elasticsearch with es%d back: %d nodes, %s (timed out: %v); want 3, green", esMaster, h.Nodes, h.Status, h.TimedOut)
	}
	if n, failed := countDocuments(t, esURLs[0], index); n != 150 || failed != 0 {
		t.Errorf("count with es%d back: %d documents, %d shards failed; want 150 and 0", esMaster, n, failed)
	}
	waitReplicasCurrent(ctx, t, stream, "n"+strconv.Itoa(natsLeader))

	// A paused node is told apart from a running one, and runs again once resumed.
	c.Node("nats-cluster", natsLeader, "stop")
	if state := c.NodeState("nats-cluster", natsLeader); state != "paused" {
		t.Errorf("services.sh nodes says n%d is %s after SIGSTOP, want paused", natsLeader, state)
	}
	c.Node("nats-cluster", natsLeader, "cont")
	if state := c.NodeState("nats-cluster", natsLeader); state != "running" {
		t.Errorf("services.sh nodes says n%d is %s after SIGCONT, want running", natsLeader, state)
	}
}

type health struct {
	Status   string `json:"status"`
	Nodes    int    `json:"number_of_nodes"`
	TimedOut bool   `json:"timed_out"`
}

// clusterHealth asks esURL for the cluster's health with the wait_for_* query
// wait; a wait that times out answers 408 with the health as it stands.
func clusterHealth(t *testing.T, esURL, wait string) health {
	t.Helper()
	res, err := http.Get(esURL + "/_cluster/health?" + wait)
	if err != nil {
		t.Fatalf("cluster health from %s: %v", esURL, err)
	}
	defer res.Body.Close()
	var h health
	if err := json.NewDecoder(res.Body).Decode(&h); err != nil {
		t.Fatalf("cluster health from %s (%s): %v", esURL, res.Status, err)
	}
	return h
}

func indexDocuments(t *testing.T, esURL, index string, from, n int) {
	t.Helper()
	var body strings.Builder
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&body, "{\"create\":{\"_id\":\"%d\"}}\n{\"n\":%d}\n", i, i)
	}
	testenv.ESJSON(t, http.MethodPost, esURL+"/"+index+"/_bulk?refresh=true", []byte(body.String()), nil)
}

// countDocuments counts the index's documents, and the shards that could not
// answer: a partial count is 200 too.
func countDocuments(t *testing.T, esURL, index string) (count, failedShards int) {
	t.Helper()
	var answer struct {
		Count  int `json:"count"`
		Shards struct {
			Failed int `json:"failed"`
		} `json:"_shards"`
	}
	testenv.ESJSON(t, http.MethodGet, esURL+"/"+index+"/_count", nil, &answer)
	return answer.Count, answer.Shards.Failed
}

// publish publishes n messages, each retried while the stream elects a new
// leader (a few seconds at most): with two of its three servers it has a
// majority, so every one must be taken.
func publish(ctx context.Context, t *testing.T, js jetstream.JetStream, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := js.Publish(ctx, "cluster-test.m", []byte(strconv.Itoa(i)), jetstream.WithMsgID(strconv.Itoa(i)))
			if err == nil {
				break
			}
			if time.Now().After(deadline) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("publish message %d to the R3 stream: %v", i, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// waitReplicasCurrent waits until the stream has a leader and two replicas, all
// current, one of them (or the leader) being the restarted node back.
func waitReplicasCurrent(ctx context.Context, t *testing.T, stream jetstream.Stream, back string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last string
	for time.Now().Before(deadline) {
		info, err := stream.Info(ctx)
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" && len(info.Cluster.Replicas) == 2 {
			current, sawBack := 0, info.Cluster.Leader == back
			for _, r := range info.Cluster.Replicas {
				if r.Current && !r.Offline {
					current++
				}
				sawBack = sawBack || r.Name == back
			}
			if current == 2 && sawBack && info.State.Msgs == 20 {
				return
			}
		}
		if err != nil {
			last = err.Error()
		} else {
			raw, _ := json.Marshal(struct {
				Cluster any
				Msgs    uint64
			}{info.Cluster, info.State.Msgs})
			last = string(raw)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("the R3 stream did not have its three servers current with 20 messages within a minute of %s's return; last: %s", back, last)
}

// With ES_CLUSTER_SECURITY=on the cluster runs with Elasticsearch's security: HTTPS
// with the CA and the elastic password handed over in the env file, TLS between
// the nodes, and users that every node knows; a node killed and started again
// rejoins it.
func TestTheSecuredClusterSpeaksTLSBetweenItsNodesAndKnowsItsUsersOnEach(t *testing.T) {
	if !testenv.ClusterPortsPinned() {
		t.Parallel()
	}
	c := testenv.StartClusters(t, []string{"ES_CLUSTER_SECURITY=on"}, "elasticsearch-cluster")
	urls := strings.Split(c.Env["ELASTICSEARCH_CLUSTER_URLS"], ",")
	ca, password := c.Env["ELASTICSEARCH_CLUSTER_CA_CERT"], c.Env["ELASTICSEARCH_CLUSTER_PASSWORD"]
	if len(urls) != 3 || !strings.HasPrefix(urls[0], "https://") || ca == "" || password == "" {
		t.Fatalf("services.sh wrote %v; want three https URLs, ELASTICSEARCH_CLUSTER_CA_CERT and ELASTICSEARCH_CLUSTER_PASSWORD", c.Env)
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	do := func(method, url, user, pass, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.SetBasicAuth(user, pass)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(raw)
	}

	if code, body := do(http.MethodGet, urls[1]+"/_cluster/health", "elastic", password, ""); code != http.StatusOK ||
		!strings.Contains(body, `"number_of_nodes":3`) || !strings.Contains(body, `"status":"green"`) {
		t.Errorf("health as elastic: %d %s; want 200, 3 nodes, green", code, body)
	}
	if code, _ := do(http.MethodGet, urls[2]+"/_security/_authenticate", "elastic", "wrong", ""); code != http.StatusUnauthorized {
		t.Errorf("a wrong password: %d, want 401", code)
	}
	if _, err := http.Get("http" + strings.TrimPrefix(urls[0], "https") + "/_cluster/health"); err == nil {
		t.Errorf("plain HTTP to %s was answered; want it refused", urls[0])
	}
	_, settings := do(http.MethodGet, urls[0]+"/_nodes/settings?filter_path=nodes.*.settings.xpack.security.transport.ssl.enabled", "elastic", password, "")
	if n := strings.Count(settings, `"enabled":"true"`); n != 3 {
		t.Errorf("transport TLS is on in %d nodes (%s), want 3", n, settings)
	}
	if code, body := do(http.MethodPut, urls[0]+"/_security/role/health", "elastic", password, `{"cluster":["monitor"]}`); code != http.StatusOK {
		t.Fatalf("create a role on es1: %d %s", code, body)
	}
	if code, body := do(http.MethodPut, urls[0]+"/_security/user/reader", "elastic", password, `{"password":"reader-password-1","roles":["health"]}`); code != http.StatusOK {
		t.Fatalf("create a user on es1: %d %s", code, body)
	}
	if code, body := do(http.MethodGet, urls[2]+"/_security/_authenticate", "reader", "reader-password-1", ""); code != http.StatusOK {
		t.Errorf("the user made on es1, on es3: %d %s; want 200", code, body)
	}

	c.Node("elasticsearch-cluster", 2, "kill")
	c.Node("elasticsearch-cluster", 2, "start")
	if code, body := do(http.MethodGet, urls[1]+"/_cluster/health?wait_for_nodes=3&wait_for_status=green&timeout=90s", "reader", "reader-password-1", ""); code != http.StatusOK {
		t.Errorf("es2 back, asked of it by the user: %d %s; want 200, 3 nodes, green", code, body)
	}
}
