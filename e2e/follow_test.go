//go:build integration

package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// follow=true against the real binaries: a webserver (or two) ingesting from an
// in-process NATS into the shared Elasticsearch node, and a backend following the
// webserver's durable consumer. The guarantee checked throughout: a follower gets
// every document of its range exactly once, byte for byte what getJsonStream
// returns for the range afterwards.

// liveFrame is what these tests publish. Pub is the publish time, for latency.
type liveFrame struct {
	ID        string `json:"id"`
	Timestamp string `json:"timestamp"`
	Camera    string `json:"camera_id"`
	Pub       int64  `json:"pub_ns"`
}

// labelledFrame is a liveFrame with a sample frame's annotations, for
// followers with a q: its camera is the sample's (cam-01, …).
type labelledFrame struct {
	liveFrame
	Frame       uint64         `json:"frame"`
	Site        string         `json:"site"`
	Model       string         `json:"model"`
	InferenceMS float64        `json:"inference_ms"`
	Labels      []sample.Label `json:"labels"`
}

// livePublisher publishes frames with event times around now: some late, some
// republished duplicates (after the stream's short duplicate window, so that they
// reach the webserver), some poison.
type livePublisher struct {
	t   testing.TB
	ctx context.Context
	js  jetstream.JetStream
	rng *rand.Rand
	n   int

	latePct, dupPct, poisonPct int
	// lateOnlyBefore: no late frames are published after this (zero: no limit).
	lateOnlyBefore time.Time
	// lateBy is how far before now late frames go (zero: an hour).
	lateBy time.Duration
	// gen, when set, gives each good frame the annotations of its next frame
	// (a labelledFrame), so that q has something to select on.
	gen *sample.Generator
	// subject is where frames are published ("": annotations.cam).
	subject string

	mu   sync.Mutex
	sent []sentFrame // good frames, for duplicates
	good int         // distinct good frames
	bad  int         // poison
	dups int
}

type sentFrame struct {
	id   string
	data []byte
	at   time.Time
}

func newLivePublisher(t testing.TB, ctx context.Context, js jetstream.JetStream) *livePublisher {
	return &livePublisher{t: t, ctx: ctx, js: js, rng: rand.New(rand.NewPCG(12, 12))}
}

// frames publishes n messages at about rate per second, returning when all are
// stored.
func (p *livePublisher) frames(n, rate int) {
	p.t.Helper()
	p.paced(n, rate, func(f jetstream.PubAckFuture) bool {
		select {
		case <-f.Ok():
			return true
		case err := <-f.Err():
			p.t.Errorf("publish: %v", err)
		case <-p.ctx.Done():
			p.t.Errorf("publish acks did not arrive")
		}
		return false
	})
}

// paced publishes n messages at about rate per second, handing each tick's
// publishes to settled, and stops early when settled says false.
func (p *livePublisher) paced(n, rate int, settled func(jetstream.PubAckFuture) bool) {
	// Ticks of 50 ms, or longer for rates under 20 a second.
	tick := max(50*time.Millisecond, time.Second/time.Duration(rate))
	perTick := max(1, rate*int(tick)/int(time.Second))
	next := time.Now()
	for done := 0; done < n; {
		var futures []jetstream.PubAckFuture
		for range min(perTick, n-done) {
			futures = append(futures, p.one())
			done++
		}
		for _, f := range futures {
			if !settled(f) {
				return
			}
		}
		next = next.Add(tick)
		time.Sleep(time.Until(next))
	}
}

func (p *livePublisher) one() jetstream.PubAckFuture {
	p.n++
	now := time.Now()
	roll := p.rng.IntN(100)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case roll < p.poisonPct:
		p.bad++
		return p.publish(fmt.Sprintf("poison-%d", p.n), []byte(`{"id":"poison","timestamp":`))
	case roll < p.poisonPct+p.dupPct && len(p.sent) > 0 && now.Sub(p.sent[0].at) > 3*time.Second:
		// The same message again, once the stream no longer remembers its id:
		// the webserver's create finds the document there.
		var old sentFrame
		for range 10 {
			if old = p.sent[p.rng.IntN(len(p.sent))]; now.Sub(old.at) > 3*time.Second {
				break
			}
		}
		if now.Sub(old.at) > 3*time.Second {
			p.dups++
			return p.publish(old.id, old.data)
		}
	}
	ts := now
	if roll >= 100-p.latePct && (p.lateOnlyBefore.IsZero() || now.Before(p.lateOnlyBefore)) {
		ts = now.Add(-time.Duration(p.rng.Int64N(int64(cmp.Or(p.lateBy, time.Hour)))))
	}
	f := liveFrame{ID: fmt.Sprintf("f-%06d", p.n), Timestamp: ts.UTC().Format(time.RFC3339Nano), Camera: fmt.Sprintf("cam-%d", p.n%4), Pub: now.UnixNano()}
	var data []byte
	if p.gen != nil {
		s := p.gen.Next()
		f.Camera = s.CameraID
		data, _ = json.Marshal(labelledFrame{liveFrame: f, Frame: s.Frame, Site: s.Site, Model: s.Model, InferenceMS: s.InferenceMS, Labels: s.Labels})
	} else {
		data, _ = json.Marshal(f)
	}
	p.sent = append(p.sent, sentFrame{id: f.ID, data: data, at: now})
	p.good++
	return p.publish(f.ID, data)
}

func (p *livePublisher) publish(id string, data []byte) jetstream.PubAckFuture {
	fut, err := p.js.PublishAsync(cmp.Or(p.subject, "annotations.cam"), data, jetstream.WithMsgID(id))
	if err != nil {
		p.t.Fatalf("publish: %v", err)
	}
	return fut
}

// followBackend runs the backend binary following the harness's webserver.
func followBackend(t *testing.T, h *harness, env map[string]string) string {
	t.Helper()
	listen := testenv.FreeAddr(t)
	full := map[string]string{
		"ELASTICSEARCH_URL": h.esURL, "ES_INDEX_PREFIX": h.prefix, "LISTEN_ADDR": listen,
		"NATS_URL": h.nats.URL(), "FOLLOW_HEARTBEAT": "1s",
	}
	maps.Copy(full, env)
	testenv.StartProcess(t, binary(t, "backend"), full)
	testenv.WaitHTTP(t, "http://"+listen+"/readyz", time.Minute)
	return "http://" + listen
}

// received is what one follower got.
type received struct {
	mu      sync.Mutex
	docs    map[string][]byte // by the frame's id
	repeats []string          // ids received more than once
	lastID  string            // the last cursor (SSE id, or NDJSON cursor record)
	live    bool              // the history was done
	ended   int               // the end event's count, or -1
	failure string            // an error record
	count   int
	latency []time.Duration // receipt - publish, per document
	gap     time.Duration   // the longest time between two documents received
	lastAt  time.Time
	idsOnly bool // docs holds ids, no bodies (newTally)
	// uncovered are the ids received since the last cursor: a stream resumed
	// from that cursor sends them again (NDJSON sends cursors only when idle).
	uncovered []string
}

func newReceived() *received { return &received{docs: map[string][]byte{}, ended: -1} }

// newTally is a received that keeps the ids it got but not their bodies: 50
// followers in a benchmark would otherwise hold a million documents, and the
// collector's work on them would be measured as the backend's latency.
func newTally() *received {
	r := newReceived()
	r.idsOnly = true
	return r
}

func (r *received) add(doc []byte) {
	var f liveFrame
	if err := json.Unmarshal(doc, &f); err != nil || f.ID == "" {
		r.failure = fmt.Sprintf("a record that is not a frame: %.200s", doc)
		return
	}
	if _, ok := r.docs[f.ID]; ok {
		r.repeats = append(r.repeats, f.ID)
	}
	r.docs[f.ID] = nil
	r.uncovered = append(r.uncovered, f.ID)
	if !r.idsOnly {
		r.docs[f.ID] = bytes.Clone(doc)
	}
	r.count++
	now := time.Now()
	r.latency = append(r.latency, now.Sub(time.Unix(0, f.Pub)))
	if !r.lastAt.IsZero() {
		r.gap = max(r.gap, now.Sub(r.lastAt))
	}
	r.lastAt = now
}

func (r *received) snapshot() (docs int, live bool, ended int, failure string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.docs), r.live, r.ended, r.failure
}

// follow reads one follow=true response into r until it ends or ctx is done.
// sse picks the encoding; after resumes (Last-Event-ID for SSE, after= for
// NDJSON). It returns the HTTP status when it was not 200.
func follow(ctx context.Context, base, query string, sse bool, after string, r *received) (int, error) {
	u := base + "/getStream?" + query
	if after != "" && !sse {
		u += "&after=" + url.QueryEscape(after)
	}
	return readStream(ctx, u, sse, after, r)
}

// readStream reads the stream at u into r, as SSE (resumed after the event id
// after, if set) or NDJSON, until it ends or ctx is done.
func readStream(ctx context.Context, u string, sse bool, after string, r *received) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	if sse {
		req.Header.Set("Accept", "text/event-stream")
		if after != "" {
			req.Header.Set("Last-Event-ID", after)
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, fmt.Errorf("%s: %s", res.Status, body)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	if sse {
		readSSE(sc, r)
	} else {
		readNDJSON(sc, r)
	}
	return http.StatusOK, sc.Err()
}

// readSSE dispatches events at their blank line, as EventSource does: an event cut
// off before it is not seen, and an id (even a keep-alive's) moves the cursor on.
func readSSE(sc *bufio.Scanner, r *received) {
	var event, id, data string
	var hasID bool
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			r.mu.Lock()
			if hasID {
				r.lastID = id
			}
			switch event {
			case "":
				if data != "" {
					r.add([]byte(data))
				}
				if hasID {
					r.uncovered = r.uncovered[:0]
				}
			case "live":
				r.live = true
			case "end":
				var end struct{ Documents int }
				json.Unmarshal([]byte(data), &end)
				r.ended = end.Documents
			case "error":
				r.failure = data
			}
			r.mu.Unlock()
			event, id, data, hasID = "", "", "", false
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			id, hasID = strings.TrimPrefix(line, "id: "), true
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
}

func readNDJSON(sc *bufio.Scanner, r *received) {
	for sc.Scan() {
		line := sc.Bytes()
		var rec struct {
			Cursor string          `json:"cursor"`
			Error  json.RawMessage `json:"error"`
		}
		json.Unmarshal(line, &rec)
		r.mu.Lock()
		switch {
		case rec.Cursor != "":
			r.lastID = rec.Cursor
			r.live = true
			r.uncovered = r.uncovered[:0]
		case rec.Error != nil:
			r.failure = string(line)
		default:
			r.add(line)
		}
		r.mu.Unlock()
	}
}

// stored is getJsonStream over [from, to) once everything indexed is searchable:
// the documents by frame id, exactly as the backend sends them.
func stored(t *testing.T, h *harness, base string, from, to time.Time) map[string][]byte {
	t.Helper()
	return storedMatching(t, h, base, from, to, "")
}

// storedMatching is stored with a q ("": none).
func storedMatching(t *testing.T, h *harness, base string, from, to time.Time, q string) map[string][]byte {
	t.Helper()
	refresh(t, h.esURL, h.prefix)
	u := base + "/getJsonStream?start_date=" + url.QueryEscape(from.Format(time.RFC3339Nano)) + "&end_date=" + url.QueryEscape(to.Format(time.RFC3339Nano))
	if q != "" {
		u += "&q=" + url.QueryEscape(q)
	}
	res := get(t, u)
	var docs []json.RawMessage
	if err := json.NewDecoder(res.Body).Decode(&docs); err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, d := range docs {
		var f liveFrame
		if err := json.Unmarshal(d, &f); err != nil {
			t.Fatal(err)
		}
		if _, ok := out[f.ID]; ok {
			t.Errorf("getJsonStream returned %s twice", f.ID)
		}
		out[f.ID] = d
	}
	return out
}

// sameDocuments reports how got differs from want: missing, extra, different bytes.
func sameDocuments(got, want map[string][]byte) string {
	var missing, extra, differ []string
	for id, w := range want {
		g, ok := got[id]
		switch {
		case !ok:
			missing = append(missing, id)
		case !bytes.Equal(g, w):
			differ = append(differ, id)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			extra = append(extra, id)
		}
	}
	if len(missing)+len(extra)+len(differ) == 0 {
		return ""
	}
	return fmt.Sprintf("%d documents: %d missing %v, %d extra %v, %d not byte for byte the same %v",
		len(want), len(missing), first(missing), len(extra), first(extra), len(differ), first(differ))
}

func rangeParams(from time.Time, to *time.Time) string {
	q := "follow=true&start_date=" + url.QueryEscape(from.UTC().Format(time.RFC3339Nano))
	if to != nil {
		q += "&end_date=" + url.QueryEscape(to.UTC().Format(time.RFC3339Nano))
	}
	return q
}

func TestFollowersGetEveryDocumentExactlyOnceThroughAKillAndASecondReplica(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	wsEnv := map[string]string{"NATS_DUPLICATE_WINDOW": "1s"}
	ws1 := h.startWebserver(wsEnv)
	base := followBackend(t, h, nil)
	pub := newLivePublisher(t, h.ctx, h.js)
	pub.latePct, pub.dupPct, pub.poisonPct = 10, 2, 1

	total := 30000
	if testing.Short() {
		total = 6000
	}
	from := time.Now().Add(-2 * time.Hour)
	// Some history before anyone follows.
	pub.frames(total/10, 1000)

	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	var wg sync.WaitGroup
	followers := []*received{newReceived(), newReceived(), newReceived()}
	for i, r := range followers {
		wg.Go(func() {
			if _, err := follow(ctx, base, rangeParams(from, nil), i != 1, "", r); err != nil && ctx.Err() == nil {
				r.mu.Lock()
				r.failure = err.Error()
				r.mu.Unlock()
			}
		})
	}
	waitFor(t, 30*time.Second, "followers turn live", func() bool {
		for _, r := range followers {
			if _, live, _, _ := r.snapshot(); !live {
				return false
			}
		}
		return true
	})

	published := make(chan struct{})
	go func() {
		defer close(published)
		pub.frames(total-total/10, 500)
	}()
	time.Sleep(15 * time.Second)
	ws1.proc.Kill()
	t.Logf("webserver killed at ack floor %d", h.consumerInfo().AckFloor.Stream)
	second := h.startWebserver(wsEnv)
	time.Sleep(10 * time.Second)
	third := h.startWebserver(wsEnv)
	<-published
	h.waitIngested(2 * time.Minute)
	t.Logf("published %d frames (%d good, %d republished, %d poison); settled up to %d",
		pub.n, pub.good, pub.dups, pub.bad, h.consumerInfo().AckFloor.Stream)

	want := stored(t, h, base, from, time.Now().Add(time.Hour))
	if len(want) != pub.good {
		t.Errorf("getJsonStream has %d documents, %d distinct good frames were published", len(want), pub.good)
	}
	waitFor(t, 30*time.Second, "followers receive every document", func() bool {
		for _, r := range followers {
			if n, _, _, failure := r.snapshot(); n < len(want) && failure == "" {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second) // two more steps: anything extra would show
	cancel()
	wg.Wait()

	for i, r := range followers {
		if r.failure != "" {
			t.Errorf("follower %d: %s", i, r.failure)
		}
		if diff := sameDocuments(r.docs, want); diff != "" {
			t.Errorf("follower %d differs from getJsonStream: %s", i, diff)
		}
		if len(r.repeats) > 0 {
			t.Errorf("follower %d got %d documents twice: %v", i, len(r.repeats), first(r.repeats))
		}
	}
	for name, ws := range map[string]*webserver{"restarted": second, "second replica": third} {
		if n := scrape(t, ws.admin+"/metrics")["webserver_documents_indexed_total"]; n == 0 {
			t.Errorf("the %s webserver indexed nothing", name)
		}
	}
}

func TestAnSSEClientCutTwentyTimesResumesWithNothingSkippedOrRepeated(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.startWebserver(map[string]string{"NATS_DUPLICATE_WINDOW": "1s"})
	base := followBackend(t, h, nil)
	pub := newLivePublisher(t, h.ctx, h.js)
	pub.latePct = 10
	from := time.Now().Add(-2 * time.Hour)
	pub.frames(3000, 2000) // a history long enough to be cut in
	h.waitIngested(time.Minute)

	published := make(chan struct{})
	go func() {
		defer close(published)
		pub.frames(5000, 250)
	}()
	r := newReceived()
	rng := rand.New(rand.NewPCG(20, 20))
	query := rangeParams(from, nil)
	historyCuts := 0
	for cut := range 20 {
		// The first five cuts and every other one after that come after a
		// number of events (the first ones land in the 3,000 of the history);
		// every cut after a time at the latest.
		ctx, cancel := context.WithCancel(h.ctx)
		if cut < 5 || cut%2 == 0 {
			r.mu.Lock()
			n := r.count + 1 + rng.IntN(500)
			r.mu.Unlock()
			go func() {
				for ctx.Err() == nil {
					r.mu.Lock()
					done := r.count >= n
					r.mu.Unlock()
					if done {
						cancel()
					}
					time.Sleep(time.Millisecond)
				}
			}()
		}
		// A time cut too, so that a count not reached cannot hang the test.
		time.AfterFunc(time.Duration(200+rng.IntN(1500))*time.Millisecond, cancel)
		r.mu.Lock()
		after := r.lastID
		r.mu.Unlock()
		if _, err := follow(ctx, base, query, true, after, r); err != nil && ctx.Err() == nil {
			t.Fatalf("connection %d: %v", cut, err)
		}
		cancel()
		if _, _, _, failure := r.snapshot(); failure != "" {
			t.Fatalf("connection %d: %s", cut, failure)
		}
		if _, live, _, _ := r.snapshot(); !live {
			historyCuts++
		}
	}
	<-published
	h.waitIngested(time.Minute)
	want := stored(t, h, base, from, time.Now().Add(time.Hour))

	// The last connection stays until everything has come.
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		follow(ctx, base, query, true, r.lastID, r)
	}()
	waitFor(t, 30*time.Second, "the resumed stream catches up", func() bool {
		n, _, _, _ := r.snapshot()
		return n >= len(want)
	})
	time.Sleep(2 * time.Second)
	cancel()
	<-done

	if diff := sameDocuments(r.docs, want); diff != "" {
		t.Errorf("the union of 21 connections differs from getJsonStream: %s", diff)
	}
	if len(r.repeats) > 0 {
		t.Errorf("%d documents came twice: %v", len(r.repeats), first(r.repeats))
	}
	if len(want) != pub.good {
		t.Errorf("getJsonStream has %d documents, %d frames were published", len(want), pub.good)
	}
	t.Logf("%d documents over 21 connections, %d cut during the history", len(want), historyCuts)
	if historyCuts == 0 {
		t.Errorf("no connection was cut during the history")
	}

	// A cursor altered by one character, or issued for another range, is refused.
	// The last cursor the client got: one connection always reads to the end.
	real := r.lastID
	if real == "" {
		t.Fatal("no cursor was ever received")
	}
	altered := []byte(real)
	altered[len(altered)/2] ^= 1
	if altered[len(altered)/2] == '-' || altered[len(altered)/2] == '_' {
		altered[len(altered)/2] = 'A'
	}
	other := rangeParams(from.Add(time.Minute), nil)
	for _, c := range []struct {
		name, query, cursor string
		sse                 bool
		param               string
	}{
		{"altered, in Last-Event-ID", query, string(altered), true, "Last-Event-ID"},
		{"altered, in after", query, string(altered), false, "after"},
		{"made up, in after", query, "bm90LWEtY3Vyc29y", false, "after"},
		{"of another range, in Last-Event-ID", other, real, true, "Last-Event-ID"},
		{"of another range, in after", other, real, false, "after"},
	} {
		status, err := follow(h.ctx, base, c.query, c.sse, c.cursor, newReceived())
		var body struct {
			Error struct{ Code, Param, Message string }
		}
		if err != nil {
			_, raw, _ := strings.Cut(err.Error(), ": ")
			json.Unmarshal([]byte(raw), &body)
		}
		if status != http.StatusBadRequest || body.Error.Param != c.param {
			t.Errorf("a cursor %s: status %d, param %q (%v); want 400 naming %s", c.name, status, body.Error.Param, err, c.param)
		}
	}
}

func TestAFollowWithAnEndDateEndsOnceItsMessagesAreSettled(t *testing.T) {
	// Not in parallel: the test publishes up to a second before end_date and
	// relies on each frame being stored within endGrace of its stamp. Beside
	// other tests' in-process NATS servers under -race, a publish took longer
	// (10 frames stamped before end_date were stored after the follow ended),
	// which says nothing of the follow. Alone, before the parallel tests
	// start, it keeps the timing it was written for.
	h := newHarness(t)
	h.startWebserver(nil)
	base := followBackend(t, h, nil)
	pub := newLivePublisher(t, h.ctx, h.js)
	pub.latePct = 10
	from := time.Now().Add(-2 * time.Hour)
	end := time.Now().Add(8 * time.Second)
	// A frame stamped just before end_date but stored just after it would be
	// in the range yet not "published before end_date": keep clear of the edge.
	pub.lateOnlyBefore = end.Add(-time.Second)
	pub.frames(1000, 1000)

	r := newReceived()
	done := make(chan error, 1)
	go func() {
		_, err := follow(h.ctx, base, rangeParams(from, &end), true, "", r)
		done <- err
	}()
	pub.frames(int(time.Until(end.Add(-time.Second))/time.Millisecond)/5, 200)
	time.Sleep(time.Until(end.Add(time.Second)))
	pub.frames(1000, 200) // after end_date: outside the range

	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the follow did not end")
	}
	h.waitIngested(time.Minute)
	want := stored(t, h, base, from, end)
	if r.ended != len(want) || r.failure != "" {
		t.Errorf("end event with %d documents (failure %q), want %d", r.ended, r.failure, len(want))
	}
	if diff := sameDocuments(r.docs, want); diff != "" {
		t.Errorf("the follow differs from getJsonStream: %s", diff)
	}
	if len(r.repeats) > 0 {
		t.Errorf("%d documents came twice: %v", len(r.repeats), first(r.repeats))
	}
	if len(want) < 1000 {
		t.Errorf("only %d documents in the range; the test published too little before end_date", len(want))
	}
}
