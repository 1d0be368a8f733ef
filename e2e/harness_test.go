//go:build integration

// Package e2e runs the real binaries against a real NATS JetStream and a real
// Elasticsearch, the way an operator runs them.
//
// This file is its harness: building the binaries once, starting them against a
// fresh nats-server and their own indices in the shared Elasticsearch node,
// publishing sample frames, waiting, and reading back what was stored. Every
// test here starts its own services, so the tests run in parallel.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pipeline-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// binary returns the path of the named ./cmd binary, or of nats-server, building
// it on first use the way `make build` does.
func binary(t testing.TB, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if path, ok := built[name]; ok {
		return path
	}
	var path string
	var err error
	if name == "nats-server" {
		path, err = testenv.BuildNATSServer(binDir)
	} else {
		var paths map[string]string
		paths, err = testenv.BuildBinaries(binDir, name)
		path = paths[name]
	}
	if err != nil {
		t.Fatalf("build %s: %v", name, err)
	}
	built[name] = path
	return path
}

// startNATS runs a nats-server of the test's own with JetStream, as a process
// beside the binaries under test, as in production: inside this test binary it
// would be built with the race detector and take several times the processors
// the binaries under test need. The tests that configure the server (TLS,
// authentication, a cluster) run it in-process, with testenv.StartNATSWith.
func startNATS(t *testing.T) *testenv.NATSServer {
	t.Helper()
	return testenv.StartNATSServer(t, binary(t, "nats-server"))
}

// message is what the test publishes; "id" lets it recognise documents coming back.
type message struct {
	ID        string `json:"id"`
	Timestamp any    `json:"timestamp"`
	Camera    string `json:"camera_id"`
}

func get(t *testing.T, url string) *http.Response {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, res.Status)
	}
	return res
}

// waitAllAcked waits until the consumer has delivered and had acknowledged n
// messages: the webserver acks only after Elasticsearch holds the document.
func waitAllAcked(t *testing.T, ctx context.Context, js jetstream.JetStream, stream, durable string, n uint64) {
	t.Helper()
	for {
		cons, err := js.Consumer(ctx, stream, durable)
		if err == nil {
			info, err := cons.Info(ctx)
			if err == nil && info.AckFloor.Stream >= n && info.NumAckPending == 0 && info.NumPending == 0 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consumer %s did not ack %d messages in time", durable, n)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// refresh makes everything indexed so far visible to search.
func refresh(t *testing.T, esURL, prefix string) {
	t.Helper()
	res, err := http.Post(esURL+"/"+prefix+"-*/_refresh", "application/json", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("refresh: %s", res.Status)
	}
}

// harness runs one scenario: a fresh nats-server, its own indices in the shared
// Elasticsearch node, and the set of document ids the scenario must end with.
type harness struct {
	t      *testing.T
	ctx    context.Context
	nats   natsServer
	esURL  string
	prefix string
	js     jetstream.JetStream
	gen    sample.Generator
	n      int
	want   map[string]bool
	// toolEnv is added to the environment of the webserver's tools (h.tool).
	toolEnv map[string]string
}

func newHarness(t *testing.T) *harness { return newHarnessOn(t, startNATS(t)) }

// natsServer is what the harness needs of a NATS server: a nats-server process
// (startNATS), or an in-process one configured by the test (testenv.StartNATSWith).
type natsServer interface {
	URL() string
	Restart()
}

// newHarnessOn is newHarness on a NATS server the test started its own way.
func newHarnessOn(t *testing.T, ns natsServer) *harness {
	esURL := testenv.ElasticsearchURL(t)
	js := testenv.JetStream(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	return &harness{
		t: t, ctx: ctx, nats: ns, esURL: esURL, prefix: testenv.IndexPrefix(t, esURL), js: js,
		gen:  sample.Generator{Start: time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC), Interval: 10 * time.Second, Cameras: 4},
		want: map[string]bool{},
	}
}

type webserver struct {
	proc  *testenv.Process
	admin string
}

// startWebserver runs the webserver binary against the harness's services and waits
// until it is ready.
func (h *harness) startWebserver(env map[string]string) *webserver {
	h.t.Helper()
	admin := testenv.FreeAddr(h.t)
	base := map[string]string{
		"NATS_URL":          h.nats.URL(),
		"ELASTICSEARCH_URL": h.esURL,
		"ES_INDEX_PREFIX":   h.prefix,
		"ES_INDEX_REPLICAS": "0",
		"ADMIN_ADDR":        admin,
		"BULK_MAX_WAIT":     "200ms",
		"NATS_ACK_WAIT":     "5s",
		"PROGRESS_INTERVAL": "2s",
		// The scenarios' frames are of March 2023, far older than the default
		// window of event times; the tests of the window set their own.
		"TIMESTAMP_MAX_PAST": "off",
	}
	maps.Copy(base, env)
	ws := &webserver{proc: testenv.StartProcess(h.t, binary(h.t, "webserver"), base), admin: "http://" + admin}
	testenv.WaitHTTP(h.t, ws.admin+"/readyz", time.Minute)
	return ws
}

// publish sends n sample frames. Most carry a Nats-Msg-Id; every tenth has none, so
// its document id is the stream position; every fiftieth repeats the previous id,
// which the stream itself drops. The ids the stream kept are the ones wanted.
func (h *harness) publish(n int) {
	h.t.Helper()
	futures := make([]jetstream.PubAckFuture, 0, 1000)
	ids := make([]string, 0, 1000)
	prevID := ""
	for range n {
		f := h.gen.Next()
		data, err := json.Marshal(f)
		if err != nil {
			h.t.Fatal(err)
		}
		id := f.MsgID()
		switch {
		case h.n%50 == 49 && prevID != "":
			id = prevID
		case h.n%10 == 9:
			id = ""
		}
		h.n++
		var opts []jetstream.PublishOpt
		if id != "" {
			opts = append(opts, jetstream.WithMsgID(id))
			prevID = id
		}
		fut, err := h.js.PublishAsync(f.Subject("annotations"), data, opts...)
		if err != nil {
			h.t.Fatalf("publish: %v", err)
		}
		futures, ids = append(futures, fut), append(ids, id)
		// Settle acknowledgements in chunks, well inside the client's async window,
		// so a slow server under a loaded machine never stalls the publisher.
		if len(futures) == 1000 {
			h.settle(futures, ids)
			futures, ids = futures[:0], ids[:0]
		}
	}
	h.settle(futures, ids)
}

// settle waits for the stream's acknowledgements and records the wanted ids.
func (h *harness) settle(futures []jetstream.PubAckFuture, ids []string) {
	h.t.Helper()
	for i, fut := range futures {
		select {
		case ack := <-fut.Ok():
			switch {
			case ack.Duplicate:
			case ids[i] != "":
				h.want[ids[i]] = true
			default:
				h.want["ANNOTATIONS-"+strconv.FormatUint(ack.Sequence, 10)] = true
			}
		case err := <-fut.Err():
			h.t.Fatalf("publish %d: %v", i, err)
		case <-h.ctx.Done():
			h.t.Fatal("publish acks did not arrive")
		}
	}
}

func (h *harness) consumerInfo() *jetstream.ConsumerInfo {
	h.t.Helper()
	for {
		ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
		info, err := h.js.Consumer(ctx, "ANNOTATIONS", "webserver")
		if err == nil {
			ci, err := info.Info(ctx)
			cancel()
			if err == nil {
				return ci
			}
		} else {
			cancel()
		}
		// The server may be restarting: wait for it.
		if h.ctx.Err() != nil {
			h.t.Fatalf("consumer info: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitAcked waits until the consumer's ack floor reaches n.
func (h *harness) waitAcked(n uint64, patience time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(patience)
	for h.consumerInfo().AckFloor.Stream < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("fewer than %d messages acked after %s", n, patience)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitIngested waits until every message in the stream was acked or dead-lettered:
// the webserver acks only after Elasticsearch holds the document.
func (h *harness) waitIngested(patience time.Duration) {
	h.t.Helper()
	stream, err := h.js.Stream(h.ctx, "ANNOTATIONS")
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := stream.Info(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	last := info.State.LastSeq
	deadline := time.Now().Add(patience)
	for {
		ci := h.consumerInfo()
		if ci.AckFloor.Stream >= last && ci.NumAckPending == 0 && ci.NumPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("not everything ingested after %s: ack floor %d of %d, %d un-acked, %d pending",
				patience, ci.AckFloor.Stream, last, ci.NumAckPending, ci.NumPending)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// assertExactlyTheWantedDocuments checks the indices hold each wanted id exactly once
// and nothing else.
func (h *harness) assertExactlyTheWantedDocuments() {
	h.t.Helper()
	got := testenv.DocumentIDs(h.t, h.esURL, h.prefix+"-*")
	var missing, extra, doubled []string
	for id := range h.want {
		if got[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id, n := range got {
		if !h.want[id] {
			extra = append(extra, id)
		}
		if n > 1 {
			doubled = append(doubled, id)
		}
	}
	if len(missing)+len(extra)+len(doubled) > 0 {
		h.t.Errorf("of %d wanted documents: %d missing %v, %d unexpected %v, %d stored more than once %v",
			len(h.want), len(missing), first(missing), len(extra), first(extra), len(doubled), first(doubled))
	}
	if len(h.want) < scenarioMessages*9/10 {
		h.t.Errorf("only %d distinct documents wanted; the scenario published too little", len(h.want))
	}
}

// deadLetters reads the dead-letter stream: original sequence → reason, and → the
// producer's message id and the payload.
func (h *harness) deadLetters(n int) (map[uint64]string, map[uint64]string) {
	h.t.Helper()
	cons, err := h.js.OrderedConsumer(h.ctx, "ANNOTATIONS_DLQ", jetstream.OrderedConsumerConfig{})
	if err != nil {
		h.t.Fatal(err)
	}
	reasons, data := map[uint64]string{}, map[uint64]string{}
	for len(reasons) < n {
		msgs, err := cons.Fetch(n-len(reasons), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			h.t.Fatal(err)
		}
		got := 0
		for m := range msgs.Messages() {
			got++
			seq, _ := strconv.ParseUint(m.Headers().Get("Dlq-Original-Sequence"), 10, 64)
			if !strings.HasPrefix(m.Subject(), "dlq.annotations.") || m.Headers().Get("Dlq-Original-Subject") != strings.TrimPrefix(m.Subject(), "dlq.") {
				h.t.Errorf("dead letter %d on subject %s, original subject header %q", seq, m.Subject(), m.Headers().Get("Dlq-Original-Subject"))
			}
			reasons[seq], data[seq] = m.Headers().Get("Dlq-Reason"), m.Headers().Get("Dlq-Original-Msg-Id")+" "+string(m.Data())
		}
		if got == 0 {
			break
		}
	}
	return reasons, data
}

func summarize(m map[uint64]string) string {
	count := map[string]int{}
	for _, r := range m {
		count[r]++
	}
	return fmt.Sprintf("%d letters %v", len(m), count)
}

func first(ids []string) []string {
	slices.Sort(ids)
	return ids[:min(len(ids), 5)]
}

func status(t *testing.T, u string) int {
	res, err := http.Get(u)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// scrape reads the unlabelled samples of a Prometheus text exposition.
func scrape(t *testing.T, u string) map[string]float64 {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatalf("scrape %s: %v", u, err)
	}
	defer res.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// tool runs a webserver subcommand against the harness's services and returns
// what it wrote (standard output, then standard error) and its exit status.
func (h *harness) tool(t *testing.T, args ...string) (string, int) {
	t.Helper()
	stdout, stderr, code := h.exec(t, args...)
	return stdout + stderr, code
}

// run is tool with standard output alone.
func (h *harness) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	stdout, stderr, code := h.exec(t, args...)
	if code > 1 {
		t.Logf("webserver %v: exit %d: %s", args, code, stderr)
	}
	return stdout, code
}

func (h *harness) exec(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.CommandContext(h.ctx, binary(t, "webserver"), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"NATS_URL=" + h.nats.URL(), "ELASTICSEARCH_URL=" + h.esURL, "ES_INDEX_PREFIX=" + h.prefix,
		"TIMESTAMP_MAX_PAST=off"} // as startWebserver: a replay must file the frames of 2023 where the webserver did
	for k, v := range h.toolEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return out.String(), errOut.String(), exit.ExitCode()
	case err != nil:
		t.Fatalf("webserver %v: %v", args, err)
	}
	return out.String(), errOut.String(), 0
}

// waitFor polls cond until it holds or patience runs out.
func waitFor(t *testing.T, patience time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(patience); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, patience)
		}
	}
}

// envInt reads a size (a benchmark's, a chaos scenario's) from the environment
// variable key, def when unset.
func envInt(t testing.TB, key string, def int) int {
	t.Helper()
	if v := os.Getenv(key); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q is not a positive integer", key, v)
		}
		return n
	}
	return def
}
