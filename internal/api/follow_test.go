package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/annotated-data/pipeline/internal/follow"
	"github.com/annotated-data/pipeline/internal/pipeline"
)

// These tests put a scripted Hub behind the real handler stack, as server_test.go
// does with the store: the floor a follow starts at, what its subscription hands
// out, and when the messages before its end_date are all stored. That the hub
// hands out every document once is package follow's to prove, and e2e's.

// step is what one call of a subscription's Next returns.
type step struct {
	page    pipeline.Page
	reached uint64
	err     error
}

// live is a step of documents created by the messages first, first+1, …
func live(first uint64, docs ...string) step {
	p := page(docs...)
	for i := range p.Docs {
		p.Keys = append(p.Keys, pipeline.Key{Time: int64(first) + int64(i), Seq: first + uint64(i)})
	}
	return step{page: p, reached: first + uint64(len(docs)) - 1}
}

// fakeHub is package follow's hub and the webserver's progress, scripted.
type fakeHub struct {
	floor     uint64          // where Start says the history ends
	startErr  error           // what Start fails with
	catchUp   []pipeline.Page // what Follow sends before it subscribes
	followErr error           // what Follow fails with, after catchUp
	steps     []step          // what each subscription hands out first
	last      uint64          // the last sequence PublishedBefore finds
	final     bool            // and whether it is final
	failures  int             // PublishedBefore fails this many times first

	mu        sync.Mutex
	positions []uint64 // where each Follow began
	asked     int      // calls of PublishedBefore
	followers chan *fakeFollower
}

func newFakeHub(floor uint64) *fakeHub {
	return &fakeHub{floor: floor, followers: make(chan *fakeFollower, 16)}
}

func (h *fakeHub) Start(context.Context) (uint64, error) { return h.floor, h.startErr }

func (h *fakeHub) PollInterval() time.Duration { return 10 * time.Millisecond }

func (h *fakeHub) Follow(_ context.Context, pos uint64, _, _ time.Time, _ []string, _ any, send func(pipeline.Page) error) (Follower, error) {
	h.mu.Lock()
	h.positions = append(h.positions, pos)
	h.mu.Unlock()
	for _, p := range h.catchUp {
		if err := send(p); err != nil {
			return nil, err
		}
	}
	if h.followErr != nil {
		return nil, h.followErr
	}
	f := &fakeFollower{ready: make(chan struct{}, 1), closed: make(chan struct{})}
	f.hand(h.steps...)
	h.followers <- f
	return f, nil
}

func (h *fakeHub) PublishedBefore(context.Context, time.Time) (uint64, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.asked++
	if h.asked <= h.failures {
		return 0, false, errors.New("nats: timeout")
	}
	return h.last, h.final, nil
}

// begun returns where each Follow began.
func (h *fakeHub) begun() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.positions)
}

func (h *fakeHub) timesAsked() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.asked
}

// subscribed returns the next subscription Follow made.
func (h *fakeHub) subscribed(t *testing.T) *fakeFollower {
	t.Helper()
	select {
	case f := <-h.followers:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("no subscription was made")
		return nil
	}
}

// fakeFollower hands out the steps given to hand, one per Next.
type fakeFollower struct {
	ready  chan struct{}
	mu     sync.Mutex
	queue  []step
	closed chan struct{}
	once   sync.Once
}

func (f *fakeFollower) hand(steps ...step) {
	f.mu.Lock()
	f.queue = append(f.queue, steps...)
	f.mu.Unlock()
	if len(steps) > 0 {
		f.signal()
	}
}

func (f *fakeFollower) signal() {
	select {
	case f.ready <- struct{}{}:
	default:
	}
}

func (f *fakeFollower) Ready() <-chan struct{} { return f.ready }

func (f *fakeFollower) Next() (pipeline.Page, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queue) == 0 {
		return pipeline.Page{}, 0, nil
	}
	s := f.queue[0]
	f.queue = f.queue[1:]
	if len(f.queue) > 0 {
		f.signal()
	}
	return s.page, s.reached, s.err
}

func (f *fakeFollower) Close() { f.once.Do(func() { close(f.closed) }) }

// waitClosed waits for the subscription to be closed.
func (f *fakeFollower) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-f.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription was not closed")
	}
}

// historyStore records how far each history was asked for, when it was asked.
type historyStore struct {
	*fakeExporter
	mu     sync.Mutex
	upTo   []uint64
	resume []pipeline.Key
}

func (s *historyStore) Export(ctx context.Context, r pipeline.Range, fn func(pipeline.Page) error) error {
	s.mu.Lock()
	if r.UpTo != nil {
		s.upTo = append(s.upTo, *r.UpTo)
	}
	if r.After != nil {
		s.resume = append(s.resume, *r.After)
	}
	s.mu.Unlock()
	return s.fakeExporter.Export(ctx, r, fn)
}

func (s *historyStore) floors() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.upTo)
}

func (s *historyStore) resumedAfter() []pipeline.Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.resume)
}

func storeOf(docs ...string) *historyStore {
	st := &historyStore{fakeExporter: &fakeExporter{}}
	if len(docs) > 0 {
		st.pages = []pipeline.Page{page(docs...)}
	}
	return st
}

// serveFollowing starts the API with st and hub.
func serveFollowing(t *testing.T, st Exporter, hub Hub, cfg Config) (*httptest.Server, *Metrics) {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	h, err := NewServer(slog.New(slog.DiscardHandler), cfg, st, hub, m)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, m
}

// Follows of 2023-03-09 from 19:40: open at the end, and until 19:45.
const (
	followOpen  = "?start_date=2023-03-09T19:40:00&follow=true"
	followUntil = someRange + "&follow=true"
)

// liveCursor is the cursor a follow of query hands out once every document up
// to sequence seq is sent.
func liveCursor(t *testing.T, query string, seq uint64) string {
	t.Helper()
	return cursors{}.encode(requestOf(t, query), cursor{live: true, key: pipeline.Key{Seq: seq}})
}

// historyCursor is the cursor a follow of query hands out in its history, which
// goes up to floor, after the document at key.
func historyCursor(t *testing.T, query string, floor uint64, key pipeline.Key) string {
	t.Helper()
	return cursors{}.encode(requestOf(t, query), cursor{floor: floor, key: key})
}

func requestOf(t *testing.T, query string) request {
	t.Helper()
	q, err := url.ParseQuery(strings.TrimPrefix(query, "?"))
	if err != nil {
		t.Fatal(err)
	}
	req, bad := parseQuery(q, rangeRules{defaultZone: time.UTC})
	if bad != nil {
		t.Fatalf("%s: %+v", query, *bad)
	}
	return req
}

// stream is a response read as it arrives.
type stream struct {
	res   *http.Response
	r     *bufio.Reader
	leave context.CancelFunc // the client goes away
}

func openStream(t *testing.T, url string, header ...string) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %d %s", url, res.StatusCode, body)
	}
	return &stream{res: res, r: bufio.NewReader(res.Body), leave: cancel}
}

// line reads the next line (an NDJSON record), without its line break.
func (s *stream) line(t *testing.T) string {
	t.Helper()
	l, err := s.r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading a line: %v (after %q)", err, l)
	}
	return strings.TrimSuffix(l, "\n")
}

// event reads the next SSE block (an event or a comment), without the blank
// line that ends it.
func (s *stream) event(t *testing.T) string {
	t.Helper()
	var lines []string
	for {
		l := s.line(t)
		if l == "" {
			return strings.Join(lines, "\n")
		}
		lines = append(lines, l)
	}
}

// rest reads the stream to its end.
func (s *stream) rest(t *testing.T) (string, error) {
	t.Helper()
	b, err := io.ReadAll(s.r)
	return string(b), err
}

func cursorRecord(c string) string { return `{"cursor":"` + c + `"}` }

func gauged(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var v dto.Metric
	if err := g.Write(&v); err != nil {
		t.Fatal(err)
	}
	return v.GetGauge().GetValue()
}

func TestAFollowSendsItsHistoryUpToTheFloorThenTheLiveDocuments(t *testing.T) {
	t.Parallel()
	st := storeOf(`{"id":"a"}`, `{"id":"b"}`)
	hub := newFakeHub(2)
	hub.steps = []step{live(3, `{"id":"c"}`, `{"id":"d"}`)}
	srv, m := serveFollowing(t, st, hub, Config{})

	s := openStream(t, srv.URL+"/getStream"+followOpen)
	for _, want := range []string{`{"id":"a"}`, `{"id":"b"}`, cursorRecord(liveCursor(t, followOpen, 2)), `{"id":"c"}`, `{"id":"d"}`} {
		if got := s.line(t); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
	if got := st.floors(); !slices.Equal(got, []uint64{2}) {
		t.Errorf("the history was read up to %v, want [2]: the floor when the follow began", got)
	}
	if got := hub.begun(); !slices.Equal(got, []uint64{2}) {
		t.Errorf("the subscriptions began after %v, want [2]: where the history ended", got)
	}
	if got := gauged(t, m.followers); got != 1 {
		t.Errorf("backend_followers = %g while following, want 1", got)
	}

	s.leave()
	hub.subscribed(t).waitClosed(t)
	if got := counted(t, m.followed); got != 2 {
		t.Errorf("backend_follow_documents_total = %g, want 2: the live documents only", got)
	}
}

func TestAnSSEFollowSaysWhereItTurnsLiveAndIdentifiesEveryDocument(t *testing.T) {
	t.Parallel()
	hub := newFakeHub(2)
	hub.steps = []step{live(3, `{"id":"c"}`)}
	srv, _ := serveFollowing(t, storeOf(`{"id":"a"}`, `{"id":"b"}`), hub, Config{})

	s := openStream(t, srv.URL+"/getStream"+followOpen, "Accept", "text/event-stream")
	for _, want := range []string{
		"id: " + historyCursor(t, followOpen, 2, pipeline.Key{Time: 1, Seq: 1}) + "\n" + `data: {"id":"a"}`,
		"id: " + historyCursor(t, followOpen, 2, pipeline.Key{Time: 2, Seq: 2}) + "\n" + `data: {"id":"b"}`,
		"event: live\nid: " + liveCursor(t, followOpen, 2) + "\n" + `data: {"documents":2}`,
		"id: " + liveCursor(t, followOpen, 3) + "\n" + `data: {"id":"c"}`,
	} {
		if got := s.event(t); got != want {
			t.Fatalf("got event\n%s\nwant\n%s", got, want)
		}
	}
}

func TestABackendWithoutNATSRefusesToFollow(t *testing.T) {
	t.Parallel()
	srv, _ := serve(t, &fakeExporter{}, Config{})
	res := get(t, srv.URL+"/getStream"+followOpen)
	body, _ := readAll(t, res)
	if e := errorOf(t, body); res.StatusCode != http.StatusNotImplemented || e.Code != "follow_unavailable" || e.Param != "follow" {
		t.Errorf("got %d %+v, want 501 follow_unavailable for follow", res.StatusCode, e)
	}
}

func TestAFollowIsRefusedWhileTheWebserversProgressCannotBeRead(t *testing.T) {
	t.Parallel()
	hub := newFakeHub(0)
	hub.startErr = errors.New("nats: timeout")
	srv, _ := serveFollowing(t, storeOf(), hub, Config{})

	res := get(t, srv.URL+"/getStream"+followOpen)
	body, _ := readAll(t, res)
	if e := errorOf(t, body); res.StatusCode != http.StatusServiceUnavailable || e.Code != "follow_unavailable" || res.Header.Get("Retry-After") != "5" {
		t.Errorf("got %d %+v (Retry-After %q), want 503 follow_unavailable with Retry-After 5", res.StatusCode, e, res.Header.Get("Retry-After"))
	}
}

func TestAFollowResumesFromACursor(t *testing.T) {
	t.Parallel()
	t.Run("a live cursor skips the history and follows after its sequence", func(t *testing.T) {
		t.Parallel()
		st := storeOf(`{"id":"a"}`)
		hub := newFakeHub(9)
		hub.steps = []step{live(6, `{"id":"f"}`)}
		srv, _ := serveFollowing(t, st, hub, Config{})

		s := openStream(t, srv.URL+"/getStream"+followOpen+"&after="+liveCursor(t, followOpen, 5))
		if got := s.line(t); got != `{"id":"f"}` {
			t.Errorf("first record %s, want the document of sequence 6", got)
		}
		if got := hub.begun(); !slices.Equal(got, []uint64{5}) {
			t.Errorf("the subscriptions began after %v, want [5]", got)
		}
		if got := st.floors(); len(got) != 0 {
			t.Errorf("the history was read up to %v, want it not read", got)
		}
	})
	t.Run("a cursor in the history finishes that history up to its floor, then follows", func(t *testing.T) {
		t.Parallel()
		st := storeOf(`{"id":"b"}`)
		hub := newFakeHub(9) // the floor has moved on since the cursor was handed out
		srv, _ := serveFollowing(t, st, hub, Config{})

		after := pipeline.Key{Time: 1, Seq: 1}
		s := openStream(t, srv.URL+"/getStream"+followOpen+"&after="+historyCursor(t, followOpen, 2, after))
		for _, want := range []string{`{"id":"b"}`, cursorRecord(liveCursor(t, followOpen, 2))} {
			if got := s.line(t); got != want {
				t.Fatalf("got %s, want %s", got, want)
			}
		}
		if got := st.floors(); !slices.Equal(got, []uint64{2}) {
			t.Errorf("the history was read up to %v, want [2]: the cursor's floor", got)
		}
		if got := st.resumedAfter(); !slices.Equal(got, []pipeline.Key{after}) {
			t.Errorf("the history resumed after %v, want [%v]", got, after)
		}
		hub.subscribed(t) // the live record goes out just before
		if got := hub.begun(); !slices.Equal(got, []uint64{2}) {
			t.Errorf("the subscriptions began after %v, want [2]", got)
		}
	})
	t.Run("a cursor ahead of the floor is refused: it belongs to another pipeline", func(t *testing.T) {
		t.Parallel()
		srv, _ := serveFollowing(t, storeOf(), newFakeHub(5), Config{})
		for _, tt := range []struct {
			name, param string
			header      []string
			query       string
		}{
			{"live, as after", "after", nil, "&after=" + liveCursor(t, followOpen, 10)},
			{"in the history, as after", "after", nil, "&after=" + historyCursor(t, followOpen, 10, pipeline.Key{Time: 1, Seq: 1})},
			{"live, as Last-Event-ID", "Last-Event-ID", []string{"Accept", "text/event-stream", "Last-Event-ID", liveCursor(t, followOpen, 10)}, ""},
		} {
			res := get(t, srv.URL+"/getStream"+followOpen+tt.query, tt.header...)
			body, _ := readAll(t, res)
			e := errorOf(t, body)
			if res.StatusCode != http.StatusBadRequest || e.Code != "invalid_cursor" || e.Param != tt.param ||
				!strings.Contains(e.Message, "(sequence 10 > 5)") {
				t.Errorf("%s: got %d %+v, want 400 invalid_cursor for %s at sequence 10 > 5", tt.name, res.StatusCode, e, tt.param)
			}
		}
	})
}

func TestLimitCountsTheHistoryAndTheLiveDocumentsTogether(t *testing.T) {
	t.Parallel()
	const liveRecord = "<live>"
	history := []string{`{"id":"a"}`, `{"id":"b"}`}
	for _, tt := range []struct {
		name    string
		limit   string
		catchUp []pipeline.Page
		steps   []step
		want    []string // records; liveRecord: the cursor where the follow turned live
		follows int
	}{
		{"reached in the history: no subscription", "2", nil, nil, []string{`{"id":"a"}`, `{"id":"b"}`}, 0},
		{"reached among live documents", "3", nil, []step{live(3, `{"id":"c"}`, `{"id":"d"}`)},
			[]string{`{"id":"a"}`, `{"id":"b"}`, liveRecord, `{"id":"c"}`}, 1},
		{"reached while catching up with the steps", "3", []pipeline.Page{live(3, `{"id":"c"}`, `{"id":"d"}`).page, live(5, `{"id":"e"}`).page}, nil,
			[]string{`{"id":"a"}`, `{"id":"b"}`, liveRecord, `{"id":"c"}`}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			hub := newFakeHub(2)
			hub.catchUp, hub.steps = tt.catchUp, tt.steps
			srv, _ := serveFollowing(t, storeOf(history...), hub, Config{})

			query := followOpen + "&limit=" + tt.limit
			body, err := openStream(t, srv.URL+"/getStream"+query).rest(t)
			if err != nil {
				t.Fatalf("the stream did not end well: %v", err)
			}
			want := strings.ReplaceAll(strings.Join(tt.want, "\n")+"\n", liveRecord, cursorRecord(liveCursor(t, query, 2)))
			if body != want {
				t.Errorf("body\n%s\nwant\n%s", body, want)
			}
			if got := len(hub.begun()); got != tt.follows {
				t.Errorf("%d subscriptions, want %d", got, tt.follows)
			}
		})
	}
}

func TestAFollowWithAnEndDateEndsOnceEveryMessageStoredBeforeItIsSent(t *testing.T) {
	t.Parallel()
	hub := newFakeHub(2)
	hub.last, hub.final = 4, true
	hub.failures = 1 // NATS fails to answer at first: asked again at the next poll
	hub.steps = []step{live(3, `{"id":"c"}`), live(4, `{"id":"d"}`)}
	srv, _ := serveFollowing(t, storeOf(`{"id":"a"}`, `{"id":"b"}`), hub, Config{})

	body, err := openStream(t, srv.URL+"/getStream"+followUntil, "Accept", "text/event-stream").rest(t)
	if err != nil {
		t.Fatalf("the stream did not end well: %v", err)
	}
	events, err := parseSSE(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range events {
		names = append(names, e.event)
	}
	if want := []string{"message", "message", "live", "message", "message", "end"}; !slices.Equal(names, want) {
		t.Fatalf("events %v, want %v", names, want)
	}
	if end := events[len(events)-1].data; end != `{"documents":4}` {
		t.Errorf("end event %s, want 4 documents", end)
	}
	if got := hub.timesAsked(); got < 2 {
		t.Errorf("NATS was asked %d times for the last message before end_date, want at least 2", got)
	}
	hub.subscribed(t).waitClosed(t)
}

func TestAFollowWhoseEndDateJustPassedWaitsEndGraceForMessagesStoredBeforeIt(t *testing.T) {
	t.Parallel()
	hub := newFakeHub(2)
	hub.last, hub.final = 2, false // NATS has stored nothing since end_date: a late clock could still
	srv, _ := serveFollowing(t, storeOf(`{"id":"a"}`, `{"id":"b"}`), hub, Config{})

	end := time.Now().UTC().Add(300 * time.Millisecond).Truncate(time.Millisecond)
	query := "?start_date=2023-03-09T19:40:00&end_date=" + end.Format("2006-01-02T15:04:05.000Z") + "&follow=true"
	body, err := openStream(t, srv.URL+"/getStream"+query).rest(t)
	if err != nil {
		t.Fatalf("the stream did not end well: %v", err)
	}
	if waited := time.Since(end); waited < endGrace {
		t.Errorf("the follow ended %s after end_date, want at least endGrace (%s)", waited, endGrace)
	}
	if want := `{"id":"a"}` + "\n" + `{"id":"b"}` + "\n" + cursorRecord(liveCursor(t, query, 2)) + "\n"; body != want {
		t.Errorf("body\n%s\nwant\n%s", body, want)
	}
	if got := hub.timesAsked(); got < 2 {
		t.Errorf("NATS was asked %d times for the last message before end_date, want it asked until endGrace passed", got)
	}
}

func TestAnIdleFollowSendsItsPositionAsAKeepAlive(t *testing.T) {
	t.Parallel()
	hub := newFakeHub(7)
	srv, _ := serveFollowing(t, storeOf(), hub, Config{Heartbeat: 20 * time.Millisecond})

	s := openStream(t, srv.URL+"/getStream"+followOpen, "Accept", "text/event-stream")
	keepAlive := func(seq uint64) string { return ": keep-alive\nid: " + liveCursor(t, followOpen, seq) }
	// next skips the keep-alives at seq, and returns what comes after them.
	next := func(seq uint64) string {
		t.Helper()
		for {
			if e := s.event(t); e != keepAlive(seq) {
				return e
			}
		}
	}
	if got, want := s.event(t), "event: live\nid: "+liveCursor(t, followOpen, 7)+"\n"+`data: {"documents":0}`; got != want {
		t.Fatalf("got\n%s\nwant the live event\n%s", got, want)
	}
	if got := s.event(t); got != keepAlive(7) {
		t.Fatalf("got\n%s\nwant a keep-alive at 7", got)
	}

	f := hub.subscribed(t)
	f.hand(live(8, `{"id":"h"}`))
	if got, want := next(7), "id: "+liveCursor(t, followOpen, 8)+"\n"+`data: {"id":"h"}`; got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if got := next(99); got != keepAlive(8) {
		t.Fatalf("got\n%s\nwant a keep-alive at 8, the document just sent", got)
	}
	// A step that finds nothing of this range still moves the position on.
	f.hand(step{reached: 9})
	if got := next(8); got != keepAlive(9) {
		t.Fatalf("got\n%s\nwant a keep-alive at 9", got)
	}
}

func TestABusyNDJSONFollowSendsItsPositionEveryHeartbeat(t *testing.T) {
	t.Parallel()
	hub := newFakeHub(7)
	srv, _ := serveFollowing(t, storeOf(), hub, Config{Heartbeat: 50 * time.Millisecond})

	s := openStream(t, srv.URL+"/getStream"+followOpen)
	if got, want := s.line(t), cursorRecord(liveCursor(t, followOpen, 7)); got != want {
		t.Fatalf("got %s, want the live cursor %s", got, want)
	}
	f := hub.subscribed(t)
	// A document every 10 ms: never a heartbeat without one.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for seq := uint64(8); ; seq++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			f.hand(live(seq, fmt.Sprintf(`{"id":"%d"}`, seq)))
		}
	}()
	last := "7"
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		l := s.line(t)
		var doc struct{ ID string }
		if json.Unmarshal([]byte(l), &doc) == nil && doc.ID != "" {
			last = doc.ID
			continue
		}
		seq, _ := strconv.ParseUint(last, 10, 64)
		if want := cursorRecord(liveCursor(t, followOpen, seq)); l != want {
			t.Fatalf("got %s, want a document or the cursor after document %s, %s", l, last, want)
		}
		if seq > 7 {
			return
		}
	}
	t.Fatal("no cursor record covered a document in 2 s of a busy follow")
}

func TestFollowersBeyondMaxFollowersAreTurnedAwayUntilOneLeaves(t *testing.T) {
	t.Parallel()
	hub := newFakeHub(0)
	srv, m := serveFollowing(t, storeOf(), hub, Config{MaxFollowers: 1})

	first := openStream(t, srv.URL+"/getStream"+followOpen)
	first.line(t)
	res := get(t, srv.URL+"/getStream"+followOpen)
	body, _ := readAll(t, res)
	e := errorOf(t, body)
	if res.StatusCode != http.StatusServiceUnavailable || e.Code != "too_many_followers" || res.Header.Get("Retry-After") != "5" ||
		!strings.Contains(e.Message, "already serving 1 follow=true streams") {
		t.Errorf("second follower: got %d %+v, want 503 too_many_followers with Retry-After 5", res.StatusCode, e)
	}
	// A plain stream is no follower: it still gets through.
	if res := get(t, srv.URL+"/getStream"+someRange); res.StatusCode != http.StatusOK {
		t.Errorf("a plain stream beside the follower: %d, want 200", res.StatusCode)
	}

	first.leave()
	hub.subscribed(t).waitClosed(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		res := get(t, srv.URL+"/getStream"+followOpen)
		if res.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a follower after the first left: still %d", res.StatusCode)
		}
		res.Body.Close()
		time.Sleep(10 * time.Millisecond)
	}
	if got := gauged(t, m.followers); got != 1 {
		t.Errorf("backend_followers = %g, want 1: the newcomer", got)
	}
}

func TestAFollowThatIsCutSaysWhyAndHowToResume(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		followErr error  // Follow fails, catching up
		nextErr   error  // the subscription ends, after one live document
		code      string // of the last record
		message   string // in it
		cut       string // the backend_follow_cut_total counted, if any
	}{
		{"too slow for the live documents", nil, follow.ErrTooSlow, "follower_too_slow",
			"ended after 3 documents: the client did not keep up with new documents; resume with the last cursor", "too_slow"},
		{"too slow to catch up with the steps", follow.ErrTooSlow, nil, "follower_too_slow",
			"ended after 2 documents: the client did not keep up", "too_slow"},
		{"by the backend stopping", nil, follow.ErrClosed, "shutting_down",
			"ended after 3 documents: the backend is stopping; resume with the last cursor", "shutdown"},
		{"by the store failing while catching up", errStoreDown, nil, "stream_interrupted",
			"the document store failed after 2 documents", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			hub := newFakeHub(2)
			hub.followErr = tt.followErr
			if tt.nextErr != nil {
				hub.steps = []step{live(3, `{"id":"c"}`), {err: tt.nextErr}}
			}
			srv, m := serveFollowing(t, storeOf(`{"id":"a"}`, `{"id":"b"}`), hub, Config{})

			body, err := openStream(t, srv.URL+"/getStream"+followOpen).rest(t)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("reading the body: %v, want io.ErrUnexpectedEOF (cut short)", err)
			}
			lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
			want := []string{`{"id":"a"}`, `{"id":"b"}`, cursorRecord(liveCursor(t, followOpen, 2))}
			if tt.nextErr != nil {
				want = append(want, `{"id":"c"}`)
			}
			if len(lines) != len(want)+1 || !slices.Equal(lines[:len(want)], want) {
				t.Fatalf("body\n%s\nwant\n%s\nand an error record", body, strings.Join(want, "\n"))
			}
			if e := errorOf(t, lines[len(want)]); e.Code != tt.code || !strings.Contains(e.Message, tt.message) {
				t.Errorf("last record %+v, want %s saying %q", e, tt.code, tt.message)
			}
			for _, reason := range []string{"too_slow", "shutdown"} {
				want := 0.0
				if reason == tt.cut {
					want = 1
				}
				if got := counted(t, m.followCuts.WithLabelValues(reason)); got != want {
					t.Errorf("backend_follow_cut_total{reason=%q} = %g, want %g", reason, got, want)
				}
			}
		})
	}
}
