//go:build integration && chaos

package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// The chaos scenarios (`make chaos`): the real webserver and backend against a
// 3-node Elasticsearch cluster and a 3-node NATS cluster, each given every
// node's URL, while a nemesis (nemesis_test.go) kills, pauses, restarts or cuts
// off a node. During each fault, frames are published at a steady rate, three
// clients follow (SSE, NDJSON, SSE with a q), one exports a fixed range over and
// over with getJsonStream and another as SSE; an SSE export cut by the fault is
// resumed with Last-Event-ID once it is over. Then the checks:
//   - the cluster is green again and every message was settled;
//   - `webserver audit` is clean: it is the judge of nothing lost or doubled;
//   - each follower holds exactly what getJsonStream returns for its range and
//     q, and got nothing twice;
//   - every export completed with exactly the range, or said it was cut (a 5xx
//     before the body, or a body cut short), never silently short;
//   - each SSE export cut and resumed holds exactly the range.
//
// Each scenario prints one row of the table in docs/operating.md, and appends it
// to the file CHAOS_REPORT names. CHAOS_MESSAGES (50,000) and CHAOS_RATE (500 a
// second) size the scenarios.

func TestChaosElasticsearchDataNodeKilled(t *testing.T) {
	runChaos(t, "an Elasticsearch data node (not the master) killed -9, restarted after 20 s", func(c *chaos) {
		n := c.cl.dataNodeNotMaster(t, c.h.prefix+"-*")
		c.note("es%d killed", n)
		c.cl.esNode(t, n, "kill")
		c.sleep(20 * time.Second)
		c.healed()
		c.cl.esNode(t, n, "start")
	})
}

func TestChaosElasticsearchMasterKilled(t *testing.T) {
	runChaos(t, "the elected Elasticsearch master killed -9, restarted after 20 s", func(c *chaos) {
		n := c.cl.esMaster(t)
		c.note("es%d (master) killed", n)
		c.cl.esNode(t, n, "kill")
		c.sleep(20 * time.Second)
		c.healed()
		c.cl.esNode(t, n, "start")
		c.note("es%d is master now", c.cl.esMaster(t))
	})
}

func TestChaosElasticsearchNodePaused(t *testing.T) {
	runChaos(t, "an Elasticsearch node holding a shard paused (SIGSTOP) for 30 s", func(c *chaos) {
		n := c.cl.dataNodeNotMaster(t, c.h.prefix+"-*")
		c.note("es%d paused", n)
		c.cl.esNode(t, n, "stop")
		c.sleep(30 * time.Second)
		c.healed()
		c.cl.esNode(t, n, "cont")
	})
}

func TestChaosElasticsearchRollingRestart(t *testing.T) {
	runChaos(t, "a rolling restart of the three Elasticsearch nodes (stop, start, green, next)", func(c *chaos) {
		for n := 1; n <= 3; n++ {
			c.cl.esNode(t, n, "term")
			c.cl.esNode(t, n, "start")
			waitFor(t, 5*time.Minute, fmt.Sprintf("green after es%d restarted", n), c.cl.green)
		}
		c.healed()
	})
}

func TestChaosNATSStreamLeaderKilled(t *testing.T) {
	runChaos(t, "the NATS node leading the stream killed -9, restarted after 20 s (stream and consumer R3)", func(c *chaos) {
		n := c.streamLeader()
		c.note("n%d (stream leader) killed", n)
		c.cl.natsNode(t, n, "kill")
		c.sleep(20 * time.Second)
		c.healed()
		c.cl.natsNode(t, n, "start")
		c.note("n%d leads the stream now", c.streamLeader())
	})
}

func TestChaosElasticsearchNodeCutOff(t *testing.T) {
	// The binaries reach node 1 through a proxy, the others directly; cutting the
	// proxy loses the path to that node alone, with the node itself running.
	var proxy *testenv.Proxy
	var node int
	runChaosWith(t, "the network to an Elasticsearch node holding a shard cut for 30 s (a proxy closes every connection)",
		func(c *chaos) {
			node = 1
			proxy = testenv.NewProxy(t, strings.TrimPrefix(c.cl.es[0], "http://"))
			urls := slices.Clone(c.cl.es)
			urls[0] = "http://" + proxy.Addr()
			c.esURLs = strings.Join(urls, ",")
		},
		func(c *chaos) {
			c.note("the path to es%d cut (it holds shards on %v)", node, c.cl.shardNodes(t, c.h.prefix+"-*"))
			proxy.Cut()
			c.sleep(30 * time.Second)
			c.healed()
			proxy.Restore()
		})
}

func TestChaosWebserverAndBackendKilled(t *testing.T) {
	runChaos(t, "the webserver and the backend killed -9 together, restarted after 5 s", func(c *chaos) {
		c.killBinaries()
		c.sleep(5 * time.Second)
		c.healed()
		c.startBinaries()
	})
}

// chaos is one scenario's state.
type chaos struct {
	t    *testing.T
	ctx  context.Context
	cl   *clusters
	h    *harness
	name string

	stream, subject string
	esURLs          string // what the binaries are given (all nodes)
	messages, rate  int

	ws        *testenv.Process
	wsAdmin   string
	be        *testenv.Process
	beListen  string
	base      string
	gone      []*testenv.Process // processes killed, for their logs
	goneRetry float64            // documents retried by the webservers killed

	mu       sync.Mutex
	faultAt  time.Time
	healedAt time.Time
	notes    []string
	status5  int // 5xx answers seen by the clients
	first5   time.Time
	last5    time.Time
}

// runChaos runs one scenario with nemesis, which acts a few seconds into the
// publishing and calls c.healed() when the fault ends.
func runChaos(t *testing.T, name string, nemesis func(*chaos)) {
	runChaosWith(t, name, nil, nemesis)
}

// runChaosWith is runChaos with setup, called before the binaries start.
func runChaosWith(t *testing.T, name string, setup, nemesis func(*chaos)) {
	started := time.Now()
	cl := chaosClusters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	t.Cleanup(cancel)
	c := &chaos{t: t, ctx: ctx, cl: cl, name: name, esURLs: strings.Join(cl.es, ","),
		messages: envInt(t, "CHAOS_MESSAGES", 50000), rate: envInt(t, "CHAOS_RATE", 500)}
	prefix := testenv.IndexPrefix(t, cl.es[0])
	// A stream, subjects and dead-letter stream of the scenario's own.
	c.stream = strings.ToUpper(strings.ReplaceAll(prefix, "-", "_"))
	c.subject = prefix
	natsURLs := strings.Join(cl.nats, ",")
	js := testenv.JetStream(t, natsURLs, jetstream.WithPublishAsyncTimeout(10*time.Second))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		js.DeleteStream(ctx, c.stream)
		js.DeleteStream(ctx, c.stream+"_DLQ")
	})
	c.h = &harness{t: t, ctx: ctx, nats: clusterNATS(natsURLs), esURL: cl.es[0], prefix: prefix, js: js, want: map[string]bool{}}
	if setup != nil {
		setup(c)
	}
	c.h.toolEnv = map[string]string{"ELASTICSEARCH_URL": c.esURLs, "NATS_STREAM": c.stream, "NATS_DURABLE": "webserver"}
	c.startBinaries()

	pub := newLivePublisher(t, ctx, js)
	pub.subject = c.subject + ".cam"
	pub.gen = &sample.Generator{Cameras: 4}
	// Late frames at most a second before their publish time, so that the
	// history's range is closed once the live frames start.
	pub.latePct, pub.poisonPct, pub.lateBy = 10, 1, time.Second
	from := time.Now().Add(-time.Hour)
	history := c.messages / 5
	pub.framesThrough(history, 2000)
	c.waitSettled(2 * time.Minute)
	exportTo := time.Now()
	time.Sleep(2 * time.Second)
	exportRange := "start_date=" + url.QueryEscape(from.Format(time.RFC3339Nano)) + "&end_date=" + url.QueryEscape(exportTo.Format(time.RFC3339Nano))

	// The clients, until the checks.
	clientsCtx, stopClients := context.WithCancel(ctx)
	defer stopClients()
	var clients sync.WaitGroup
	followers := []*chaosFollower{
		{name: "SSE", sse: true, got: newReceived()},
		{name: "NDJSON", got: newReceived()},
		{name: "SSE with q", sse: true, q: surePerson, got: newReceived()},
	}
	for _, f := range followers {
		clients.Go(func() { c.follow(clientsCtx, from, f) })
	}
	waitFor(t, time.Minute, "followers turn live", func() bool {
		for _, f := range followers {
			if _, live, _, _ := f.got.snapshot(); !live {
				return false
			}
		}
		return true
	})
	exports := &exportLog{}
	clients.Go(func() { c.exportAgain(clientsCtx, exportRange, exports) })
	sses := &sseExports{}
	clients.Go(func() { c.exportSSEAgain(clientsCtx, exportRange, sses) })

	// The fault, a few seconds into a steady publishing.
	published := make(chan struct{})
	go func() {
		defer close(published)
		pub.framesThrough(c.messages-history, c.rate)
	}()
	c.sleep(5 * time.Second)
	c.mu.Lock()
	c.faultAt = time.Now()
	c.mu.Unlock()
	nemesis(c)
	c.healed()
	recovery := c.waitRecovered(5 * time.Minute)
	<-published
	c.waitSettled(5 * time.Minute)
	t.Logf("published %d frames (%d good, %d poison) in %s; recovered %s after the fault ended",
		pub.n, pub.good, pub.bad, time.Since(started).Round(time.Second), recovery.Round(100*time.Millisecond))

	// The judge.
	c.audit()
	if !c.cl.green() {
		t.Errorf("the cluster is %+v after recovery", c.cl.health())
	}

	// Followers against getJsonStream of their range, with their q.
	to := time.Now().Add(time.Hour)
	wants := map[string]map[string][]byte{}
	for _, f := range followers {
		if _, ok := wants[f.q]; !ok {
			wants[f.q] = storedMatching(t, c.h, c.base, from, to, f.q)
		}
	}
	if all := wants[""]; len(all) != pub.good {
		t.Errorf("getJsonStream has %d documents; %d distinct good frames were published", len(all), pub.good)
	}
	waitFor(t, 2*time.Minute, "followers receive every document", func() bool {
		for _, f := range followers {
			if n, _, _, _ := f.got.snapshot(); n < len(wants[f.q]) {
				return false
			}
		}
		return true
	})
	t.Logf("followers caught up (%s)", time.Since(started).Round(time.Second))
	time.Sleep(2 * time.Second) // two more steps: anything extra would show
	stopClients()
	clients.Wait()
	for _, f := range followers {
		f.got.mu.Lock()
		if diff := sameDocuments(f.got.docs, wants[f.q]); diff != "" {
			t.Errorf("follower %s differs from getJsonStream: %s", f.name, diff)
		}
		if len(f.got.repeats) > 0 {
			t.Errorf("follower %s got %d documents twice: %v", f.name, len(f.got.repeats), first(f.got.repeats))
		}
		f.got.mu.Unlock()
		if len(f.breaks) > 0 {
			t.Logf("follower %s resumed %d times, %d documents after its last cursor sent again: %s",
				f.name, len(f.breaks), f.forgotten, strings.Join(tally(f.breaks), "; "))
		}
	}
	if len(wants[surePerson]) == 0 {
		t.Errorf("the follower with q has nothing to compare: no document matches %s", surePerson)
	}

	// Exports against the range.
	want := stored(t, c.h, c.base, from, exportTo)
	if len(want) < history/2 {
		t.Errorf("the export range holds %d documents; the history was %d frames", len(want), history)
	}
	for i, got := range exports.complete {
		if diff := sameDocuments(got, idsOf(want)); diff != "" {
			t.Errorf("export %d completed (a whole JSON array) but differs from the range: %s", i, diff)
		}
	}
	if exports.silent > 0 {
		t.Errorf("%d exports ended short without saying so", exports.silent)
	}
	for i, got := range sses.whole {
		if diff := sameDocuments(got, idsOf(want)); diff != "" {
			t.Errorf("SSE export %d ended (its end event) but differs from the range: %s", i, diff)
		}
	}
	for i, r := range sses.resumed {
		if diff := sameDocuments(r.docs, want); diff != "" {
			t.Errorf("SSE export %d, cut and resumed with Last-Event-ID, differs from the range: %s", i, diff)
		}
		if len(r.repeats) > 0 {
			t.Errorf("SSE export %d, cut and resumed, got %d documents twice: %v", i, len(r.repeats), first(r.repeats))
		}
	}

	c.report(chaosRow{
		wall: time.Since(started), recovery: recovery, published: pub.n,
		exports: exports, sses: sses,
	})
}

// audit runs `webserver audit`, which must exit 0 (clean). An audit that could
// not run (exit 2: a request NATS or Elasticsearch did not answer) is run again,
// twice at most, and counted in the row, as an operator would.
func (c *chaos) audit() {
	c.t.Helper()
	for attempt := 1; ; attempt++ {
		out, code := c.h.tool(c.t, "audit")
		switch {
		case code == 0:
			c.t.Logf("audit:\n%s", out)
			return
		case code == 2 && attempt < 3:
			c.note("audit could not run (attempt %d): %s", attempt, shorten(strings.TrimSpace(out)))
			c.sleep(5 * time.Second)
		default:
			c.t.Errorf("webserver audit exited %d:\n%s", code, out)
			return
		}
	}
}

// clusterNATS is a NATS cluster's URLs, which the harness cannot restart.
type clusterNATS string

func (u clusterNATS) URL() string { return string(u) }
func (u clusterNATS) Restart()    { panic("a NATS cluster is restarted node by node, by the nemesis") }

func (c *chaos) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.t.Log(msg)
	c.mu.Lock()
	c.notes = append(c.notes, msg)
	c.mu.Unlock()
}

// sleep waits d, or until the scenario is out of time.
func (c *chaos) sleep(d time.Duration) {
	select {
	case <-time.After(d):
	case <-c.ctx.Done():
	}
}

// healed marks the end of the fault (the first call counts): a node restarted,
// resumed or reachable again. Recovery is timed from there.
func (c *chaos) healed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.healedAt.IsZero() {
		c.healedAt = time.Now()
	}
}

func (c *chaos) isHealed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.healedAt.IsZero()
}

// startBinaries starts the webserver and the backend, each with every node's
// URL, on the addresses of the first start.
func (c *chaos) startBinaries() {
	t := c.t
	if c.wsAdmin == "" {
		c.wsAdmin, c.beListen = testenv.FreeAddr(t), testenv.FreeAddr(t)
		c.base = "http://" + c.beListen
	}
	c.ws = testenv.StartProcess(t, binary(t, "webserver"), map[string]string{
		"NATS_URL": c.h.nats.URL(), "ELASTICSEARCH_URL": c.esURLs, "ES_INDEX_PREFIX": c.h.prefix,
		"ES_INDEX_REPLICAS": "1", "NATS_STREAM": c.stream, "NATS_SUBJECTS": c.subject + ".>",
		"NATS_STREAM_REPLICAS": "3", "NATS_DURABLE": "webserver",
		"ADMIN_ADDR": c.wsAdmin, "BULK_MAX_WAIT": "200ms", "PROGRESS_INTERVAL": "5s",
	})
	c.be = testenv.StartProcess(t, binary(t, "backend"), map[string]string{
		"NATS_URL": c.h.nats.URL(), "ELASTICSEARCH_URL": c.esURLs, "ES_INDEX_PREFIX": c.h.prefix,
		"LISTEN_ADDR": c.beListen, "NATS_STREAM": c.stream, "NATS_DURABLE": "webserver", "FOLLOW_HEARTBEAT": "1s",
		// The clients here are one test: no rate limit, and room for all its streams.
		"RATE_LIMIT_REQUESTS": "0", "API_MAX_STREAMS_PER_CLIENT": "16",
		// Small pages: an export of the range is many searches, so that a
		// fault is likelier to cut one midway.
		"API_PAGE_SIZE": "200",
	})
	testenv.WaitHTTP(t, "http://"+c.wsAdmin+"/readyz", 2*time.Minute)
	testenv.WaitHTTP(t, c.base+"/readyz", 2*time.Minute)
}

// killBinaries kills the webserver and the backend at once, keeping what the
// webserver had counted.
func (c *chaos) killBinaries() {
	c.goneRetry += c.retried()
	ws, be := c.ws, c.be
	var wg sync.WaitGroup
	wg.Go(ws.Kill)
	wg.Go(be.Kill)
	wg.Wait()
	c.gone = append(c.gone, ws, be)
	c.note("webserver and backend killed")
}

// retried is the running webserver's count of bulk items sent again.
func (c *chaos) retried() float64 {
	return scrape(c.t, "http://"+c.wsAdmin+"/metrics")["webserver_documents_retried_total"]
}

// consumer is the webserver's durable consumer, and the stream's last sequence.
func (c *chaos) consumer() (*jetstream.ConsumerInfo, uint64, error) {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	s, err := c.h.js.Stream(ctx, c.stream)
	if err != nil {
		return nil, 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, 0, err
	}
	cons, err := s.Consumer(ctx, "webserver")
	if err != nil {
		return nil, 0, err
	}
	ci, err := cons.Info(ctx)
	return ci, info.State.LastSeq, err
}

// waitSettled waits until every message in the stream was acked (indexed or
// dead-lettered), nothing pending.
func (c *chaos) waitSettled(patience time.Duration) {
	c.t.Helper()
	waitState(c.t, patience, "every message settled", func() (bool, string) {
		ci, seq, err := c.consumer()
		if err != nil {
			return false, err.Error()
		}
		return ci.AckFloor.Stream >= seq && ci.NumAckPending == 0 && ci.NumPending == 0,
			fmt.Sprintf("ack floor %d of %d, %d un-acked, %d pending", ci.AckFloor.Stream, seq, ci.NumAckPending, ci.NumPending)
	})
}

// waitState is waitFor with a condition that says where it stands, for the failure.
func waitState(t *testing.T, patience time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	for deadline := time.Now().Add(patience); ; time.Sleep(250 * time.Millisecond) {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s (%s)", what, patience, state)
		}
	}
}

// waitRecovered waits, from the end of the fault, until the cluster is green and
// ingestion has caught up: no more waiting than a second of publishing (the
// webserver's normal lag), or nothing at all once publishing is done. It
// returns the time that took.
func (c *chaos) waitRecovered(patience time.Duration) time.Duration {
	c.t.Helper()
	waitState(c.t, patience, "recovery (green, ingestion caught up)", func() (bool, string) {
		if !c.cl.green() {
			return false, fmt.Sprintf("cluster %+v", c.cl.health())
		}
		ci, _, err := c.consumer()
		if err != nil {
			return false, err.Error()
		}
		behind := ci.NumPending + uint64(ci.NumAckPending)
		return behind <= uint64(c.rate), fmt.Sprintf("%d messages behind", behind)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Since(c.healedAt)
}

// saw records the status of an answer a client got: a 5xx is counted.
func (c *chaos) saw(status int) {
	if status < 500 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status5++
	now := time.Now()
	if c.first5.IsZero() {
		c.first5 = now
	}
	c.last5 = now
}

// chaosFollower is one follow=true client, resuming from its last cursor each
// time its stream breaks.
type chaosFollower struct {
	name   string
	sse    bool
	q      string
	got    *received
	breaks []string
	// forgotten counts the documents received after the last cursor of a
	// stream that broke: they come again.
	forgotten int
}

func (c *chaos) follow(ctx context.Context, from time.Time, f *chaosFollower) {
	query := rangeParams(from, nil)
	if f.q != "" {
		query += "&q=" + url.QueryEscape(f.q)
	}
	for ctx.Err() == nil {
		f.got.mu.Lock()
		after := f.got.lastID
		f.got.mu.Unlock()
		status, err := follow(ctx, c.base, query, f.sse, after, f.got)
		c.saw(status)
		if ctx.Err() != nil {
			return
		}
		f.got.mu.Lock()
		why := f.got.failure
		f.got.failure = ""
		f.forgotten += f.got.forgetUncovered()
		f.got.mu.Unlock()
		if why == "" && err != nil {
			why = err.Error()
		}
		f.breaks = append(f.breaks, shorten(why))
		c.sleep(time.Second)
	}
}

// forgetUncovered drops the documents received after the last cursor, which a
// stream resumed from it sends again, as a client that keeps what its cursor
// covers does, and says how many. The caller holds r.mu.
func (r *received) forgetUncovered() (n int) {
	for _, id := range r.uncovered {
		if _, ok := r.docs[id]; ok {
			delete(r.docs, id)
			r.count--
			n++
		}
	}
	r.uncovered = r.uncovered[:0]
	return n
}

// exportLog is what the repeated exports of one range ended with.
type exportLog struct {
	complete    []map[string][]byte // ids of each export that completed
	interrupted int                 // ended short, visibly (a JSON array left open)
	refused     int                 // a 5xx before the body
	unreachable int                 // no answer
	silent      int                 // short without saying so: never allowed
}

// exportAgain exports the range with getJsonStream again and again until ctx is
// done, classifying how each one ended.
func (c *chaos) exportAgain(ctx context.Context, rangeParams string, log *exportLog) {
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/getJsonStream?"+rangeParams, nil)
		res, err := http.DefaultClient.Do(req)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.unreachable++
		case res.StatusCode != http.StatusOK:
			c.saw(res.StatusCode)
			log.refused++
			res.Body.Close()
		default:
			ids, err := exportedIDs(res.Body)
			res.Body.Close()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				log.interrupted++
			default:
				log.complete = append(log.complete, ids)
			}
		}
		c.sleep(time.Second)
	}
}

// exportedIDs reads a JSON array of frames: an error when it is not whole.
func exportedIDs(r io.Reader) (map[string][]byte, error) {
	var docs []struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(r).Decode(&docs); err != nil {
		return nil, err
	}
	ids := map[string][]byte{}
	for _, d := range docs {
		ids[d.ID] = nil
	}
	return ids, nil
}

// idsOf is docs without their bodies, for comparing ids alone.
func idsOf(docs map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(docs))
	for id := range maps.Keys(docs) {
		out[id] = nil
	}
	return out
}

// sseExports is what the repeated SSE exports of one range ended with.
type sseExports struct {
	whole       []map[string][]byte // ids of each export that ended with its end event
	resumed     []*received         // each export cut midway, then resumed to its end
	cuts        []string            // how they were cut
	refused     int                 // a 5xx before the first event
	unreachable int
}

// exportSSEAgain exports the range as SSE again and again until ctx is done.
// An export cut midway (an error event, a connection lost) waits for the end of
// the fault and resumes with Last-Event-ID until it ends, as EventSource does.
func (c *chaos) exportSSEAgain(ctx context.Context, rangeParams string, e *sseExports) {
	u := c.base + "/getStream?" + rangeParams
	for ctx.Err() == nil {
		r := newReceived()
		status, err := readStream(ctx, u, true, "", r)
		c.saw(status)
		switch {
		case ctx.Err() != nil:
			return
		case status == 0:
			e.unreachable++
		case status != http.StatusOK:
			e.refused++
		case r.ended >= 0:
			e.whole = append(e.whole, idsOf(r.docs))
		default:
			for r.ended < 0 {
				why := r.failure
				if why == "" && err != nil {
					why = err.Error()
				}
				e.cuts = append(e.cuts, shorten(cmp.Or(why, "the stream ended without its end event")))
				r.failure = ""
				for !c.isHealed() && ctx.Err() == nil {
					c.sleep(time.Second)
				}
				c.sleep(time.Second)
				if ctx.Err() != nil {
					return
				}
				status, err = readStream(ctx, u, true, r.lastID, r)
				c.saw(status)
			}
			e.resumed = append(e.resumed, r)
		}
		c.sleep(time.Second)
	}
}

// framesThrough is frames through a fault: a publish the cluster did not
// acknowledge is sent again, with its Nats-Msg-Id, until it is (the stream's
// duplicate window drops a second copy), as a producer that must not lose
// frames does.
func (p *livePublisher) framesThrough(n, rate int) {
	p.paced(n, rate, func(f jetstream.PubAckFuture) bool {
		select {
		case <-f.Ok():
		case <-f.Err():
			p.republish(f.Msg())
		case <-p.ctx.Done():
			return false
		}
		return true
	})
}

func (p *livePublisher) republish(m *nats.Msg) {
	for p.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		_, err := p.js.PublishMsg(ctx, m)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// chaosHeader heads the table of chaosRows.
const chaosHeader = `| fault | messages | wall time | fault lasted | recovery | 5xx to clients | documents retried | getJsonStream exports | SSE exports | webserver WARN/ERROR | backend WARN/ERROR | nemesis |
|---|---|---|---|---|---|---|---|---|---|---|---|`

// chaosRow is one scenario's figures.
type chaosRow struct {
	wall, recovery time.Duration
	published      int
	exports        *exportLog
	sses           *sseExports
}

// report logs the scenario's row of the table and appends it to CHAOS_REPORT.
func (c *chaos) report(r chaosRow) {
	retried := c.goneRetry + c.retried()
	c.mu.Lock()
	fives := "none"
	if c.status5 > 0 {
		fives = fmt.Sprintf("%d over %s", c.status5, c.last5.Sub(c.first5).Round(time.Second))
	}
	fault := c.healedAt.Sub(c.faultAt).Round(time.Second)
	c.mu.Unlock()
	sse := fmt.Sprintf("%d whole, %d refused, %d unreachable, %d cut", len(r.sses.whole), r.sses.refused, r.sses.unreachable, len(r.sses.resumed))
	if len(r.sses.resumed) > 0 {
		sse += fmt.Sprintf(" (%s) and resumed whole", strings.Join(tally(r.sses.cuts), "; "))
	}
	e := r.exports
	c.mu.Lock()
	notes := strings.Join(c.notes, "; ")
	c.mu.Unlock()
	row := fmt.Sprintf("| %s | %d | %s | %s | %s | %s | %.0f | %d whole, %d cut, %d refused, %d unreachable | %s | %s | %s | %s |",
		c.name, r.published, r.wall.Round(time.Second), fault, r.recovery.Round(100*time.Millisecond), fives, retried,
		len(e.complete), e.interrupted, e.refused, e.unreachable, sse,
		logSummary(append(processesOf(c.gone, 0), c.ws)), logSummary(append(processesOf(c.gone, 1), c.be)), cmp.Or(notes, "-"))
	c.t.Logf("chaos row:\n%s", row)
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		_, err := os.Stat(path)
		fresh := errors.Is(err, os.ErrNotExist)
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			c.t.Errorf("CHAOS_REPORT: %v", err)
			return
		}
		defer f.Close()
		if fresh {
			fmt.Fprintln(f, chaosHeader)
		}
		fmt.Fprintln(f, row)
	}
}

// processesOf picks every other process of gone, from i: the killed webservers
// (0) or backends (1), as killBinaries appends them in pairs.
func processesOf(gone []*testenv.Process, i int) []*testenv.Process {
	var out []*testenv.Process
	for ; i < len(gone); i += 2 {
		out = append(out, gone[i])
	}
	return out
}

// logSummary counts the distinct WARN and ERROR messages the processes logged.
func logSummary(procs []*testenv.Process) string {
	count := map[string]int{}
	for _, p := range procs {
		for line := range strings.Lines(p.Output()) {
			var rec struct{ Level, Msg string }
			if json.Unmarshal([]byte(line), &rec) != nil || (rec.Level != "WARN" && rec.Level != "ERROR") {
				continue
			}
			count[rec.Level+" "+rec.Msg]++
		}
	}
	if len(count) == 0 {
		return "none"
	}
	var parts []string
	for _, m := range slices.Sorted(maps.Keys(count)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", m, count[m]))
	}
	return strings.Join(parts, "; ")
}

// tally lists each distinct string of s once, with how often it came: "x ×3".
func tally(s []string) []string {
	count := map[string]int{}
	for _, x := range s {
		count[x]++
	}
	var out []string
	for _, x := range slices.Sorted(maps.Keys(count)) {
		out = append(out, fmt.Sprintf("%s ×%d", x, count[x]))
	}
	return out
}

// shorten keeps the code of an error record, or else the first line of an
// error, at most 100 characters of it.
func shorten(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	var record struct{ Error struct{ Code string } }
	if json.Unmarshal([]byte(s), &record) == nil && record.Error.Code != "" {
		return record.Error.Code // an error record or event: its code says it
	}
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	return s
}
