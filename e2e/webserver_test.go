//go:build integration

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// The promise, checked in every scenario below: each of this many published
// messages ends up as exactly one document.
const scenarioMessages = 20000

func TestWebserverIndexesEveryMessageExactlyOnce(t *testing.T) {
	h := newHarness(t)
	h.startWebserver(nil)
	h.publish(scenarioMessages)
	h.waitIngested(3 * time.Minute)
	h.assertExactlyTheWantedDocuments()
}

func TestWebserverKilledMidRunLosesAndDuplicatesNothing(t *testing.T) {
	h := newHarness(t)
	first := h.startWebserver(nil)
	h.publish(scenarioMessages)
	h.waitAcked(scenarioMessages/4, time.Minute)
	first.proc.Kill() // no graceful shutdown: bulks in flight, acks unsent
	if floor := h.consumerInfo().AckFloor.Stream; floor >= scenarioMessages {
		t.Fatalf("everything was acked before the kill (ack floor %d); the test did not test a crash", floor)
	}
	h.startWebserver(nil)
	h.waitIngested(3 * time.Minute)
	h.assertExactlyTheWantedDocuments()
}

func TestWebserverWaitsOutAnElasticsearchOutage(t *testing.T) {
	h := newHarness(t)
	proxy := testenv.NewProxy(t, strings.TrimPrefix(h.esURL, "http://"))
	ws := h.startWebserver(map[string]string{"ELASTICSEARCH_URL": "http://" + proxy.Addr()})
	h.publish(scenarioMessages)
	h.waitAcked(scenarioMessages/5, time.Minute)

	proxy.Cut()
	var sawNotReady bool
	var maxUnacked, maxHeap float64
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if status(t, ws.admin+"/readyz") == http.StatusServiceUnavailable {
			sawNotReady = true
		}
		m := scrape(t, ws.admin+"/metrics")
		maxUnacked = max(maxUnacked, m["webserver_messages_unacked"])
		maxHeap = max(maxHeap, m["go_memstats_heap_inuse_bytes"])
	}
	ackedDuringOutage := h.consumerInfo().AckFloor.Stream
	proxy.Restore()

	h.waitIngested(3 * time.Minute)
	h.assertExactlyTheWantedDocuments()
	if !sawNotReady {
		t.Errorf("/readyz never reported not-ready while Elasticsearch was unreachable")
	}
	// Fetching pauses while the workers hold their batches: at most every worker's
	// batch plus the one being handed over (defaults: 2 workers, 5000 documents).
	if limit := float64(5000 * (2 + 1)); maxUnacked > limit {
		t.Errorf("held up to %.0f un-acked messages during the outage, want at most %.0f", maxUnacked, limit)
	}
	if limit := float64(64 << 20); maxHeap > limit {
		t.Errorf("heap in use reached %.0f MiB during the outage, want at most %.0f MiB", maxHeap/(1<<20), limit/(1<<20))
	}
	if ackedDuringOutage >= scenarioMessages {
		t.Errorf("everything was acked before the outage ended (ack floor %d); the test did not test an outage", ackedDuringOutage)
	}
	if !strings.Contains(ws.proc.Output(), "elasticsearch unreachable") || !strings.Contains(ws.proc.Output(), "elasticsearch reachable again") {
		t.Errorf("the outage's start and end were not logged")
	}
	if n := strings.Count(ws.proc.Output(), "elasticsearch unreachable"); n != 1 {
		t.Errorf("the outage was logged %d times, want once", n)
	}
}

func TestWebserverSurvivesANATSRestart(t *testing.T) {
	h := newHarness(t)
	ws := h.startWebserver(nil)
	h.publish(scenarioMessages)
	h.waitAcked(scenarioMessages/4, time.Minute)
	h.nats.Restart()
	h.waitIngested(3 * time.Minute)
	h.assertExactlyTheWantedDocuments()
	if out := ws.proc.Output(); !strings.Contains(out, "nats disconnected") || !strings.Contains(out, "nats reconnected") {
		t.Errorf("the webserver did not notice the restart:\n%s", out)
	}
}

func TestTwoWebserversShareOneDurableConsumer(t *testing.T) {
	h := newHarness(t)
	a := h.startWebserver(nil)
	b := h.startWebserver(nil)
	h.publish(scenarioMessages)
	h.waitIngested(3 * time.Minute)
	h.assertExactlyTheWantedDocuments()
	for name, ws := range map[string]*webserver{"first": a, "second": b} {
		if n := scrape(t, ws.admin+"/metrics")["webserver_documents_indexed_total"]; n == 0 {
			t.Errorf("the %s webserver indexed nothing: the work was not shared", name)
		}
	}
}

func TestPoisonMessagesGoToTheDeadLetterStreamWithTheirReason(t *testing.T) {
	h := newHarness(t)
	h.startWebserver(map[string]string{"TIMESTAMP_REQUIRED": "true", "MAX_MESSAGE_BYTES": "4096"})
	h.publish(1)
	h.waitIngested(time.Minute)

	poisons := []struct {
		reason string
		data   string
		id     string // Nats-Msg-Id prefix; a numbered "poison-" one when empty
	}{
		{"invalid_json", `{"camera_id":"cam-01","frame":`, ""},
		{"not_an_object", `[1,2,3]`, ""},
		// A field of another type than the index maps is no poison: the drift
		// fixtures (drift_test.go) see it stored. A field the pipeline writes is.
		{"reserved_field", `{"camera_id":"cam-01","@nats":{"seq":1},"timestamp":"2023-03-09T19:40:00Z"}`, ""},
		{"too_large", `{"timestamp":"2023-03-09T19:40:00Z","blob":"` + strings.Repeat("x", 5000) + `"}`, ""},
		{"missing_timestamp", `{"camera_id":"cam-01","frame":7}`, ""},
		// A good message whose id Elasticsearch cannot take: alone in a bulk
		// request it would fail the whole request.
		{"invalid_msg_id", `{"camera_id":"cam-01","frame":8,"timestamp":"2023-03-09T19:40:00Z"}`, strings.Repeat("x", 600)},
	}
	wantDLQ := map[uint64]string{} // original stream sequence → reason
	wantData := map[uint64]string{}
	for i := range scenarioMessages {
		if i%100 == 99 { // 1% poison, every kind alike
			p := poisons[(i/100)%len(poisons)]
			id := p.id + fmt.Sprintf("poison-%d", i)
			ack, err := h.js.Publish(h.ctx, "annotations.cam-01", []byte(p.data), jetstream.WithMsgID(id))
			if err != nil {
				t.Fatal(err)
			}
			wantDLQ[ack.Sequence], wantData[ack.Sequence] = p.reason, id+" "+p.data
			continue
		}
		h.publish(1)
	}
	h.waitIngested(3 * time.Minute)
	h.assertExactlyTheWantedDocuments()

	got, gotData := h.deadLetters(len(wantDLQ))
	if !maps.Equal(got, wantDLQ) {
		t.Errorf("dead letters (sequence → reason) differ:\n got %v\nwant %v", summarize(got), summarize(wantDLQ))
	}
	if !maps.Equal(gotData, wantData) {
		t.Errorf("dead letters do not carry their original ids and payloads")
	}
}

// harness runs one scenario: a fresh in-process NATS, its own indices in the shared
// Elasticsearch node, and the set of document ids the scenario must end with.
type harness struct {
	t      *testing.T
	ctx    context.Context
	nats   *testenv.NATS
	esURL  string
	prefix string
	js     jetstream.JetStream
	gen    sample.Generator
	n      int
	want   map[string]bool
}

func newHarness(t *testing.T) *harness {
	ns := testenv.StartNATS(t)
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
