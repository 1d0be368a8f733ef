// Package follow streams a range's documents as they become searchable, after its
// history, with none missed and none repeated.
//
// # Why this is exact
//
// Every document carries the stream sequence of the message that created it
// (@nats.seq), and the webserver's durable consumer has an ack floor F: every
// message with sequence ≤ F is settled, its document indexed (or found already
// there) or the message dead-lettered, and the floor never passes a message
// still in flight, whichever replica holds it. A refresh that starts after F was
// read therefore makes every document with @nats.seq ≤ F searchable, and no
// document with @nats.seq ≤ F can appear later: a redelivery or a second replica
// finds it already there (a 409, acked without a copy).
//
// So a follow reads F0, refreshes, and streams the history of its range with
// @nats.seq ≤ F0 from a point in time. Then each step reads F, refreshes, and
// sends the documents with F_prev < @nats.seq ≤ F in the range, by sequence.
// History and steps partition the sequences, so every document of the range is
// sent exactly once whatever its @timestamp: late events included. A document
// becomes visible to a follower within a poll interval of its message being
// settled. A document without @nats.seq (the old system's, or indexed by hand)
// came from no message, no step ever selects it, and nothing can add it later:
// the history holds it, whatever F0.
//
// The position reached is a cursor: (F0, @timestamp, @nats.seq) during the
// history, which is ordered by @timestamp then @nats.seq, and the sequence alone
// afterwards. A stream resumed from a cursor continues exactly after it; only
// documents without a sequence share one cursor per millisecond, and resuming
// after one skips the others of its millisecond.
//
// # Sharing
//
// All followers share one poller per set of fields asked for: one floor read,
// one refresh and one query per step over the union of their ranges, whatever
// their number. Followers with a filter (q) share it too: the query keeps the
// documents that match any follower's filter, each filter named, and each
// document comes back with the names of those it matched; so a filter runs in
// Elasticsearch, once per step, and no document is read twice to be filtered. A follower holds at most Config.Buffer documents it has not
// taken; the poller waits a while for one that is full, then cuts it, so a slow
// client costs bounded memory and delays the others by at most that wait, once.
package follow

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// Floor is the webserver's progress (package consumer implements it).
type Floor interface {
	// Settled returns the ack floor: every message up to it is settled.
	Settled(ctx context.Context) (uint64, error)
}

// Store is where followed documents are read (package store implements it).
type Store interface {
	// Refresh makes every document indexed before the call searchable.
	Refresh(ctx context.Context) error
	// Settled returns, by sequence, the documents q selects, with their keys
	// and the filters each matched.
	Settled(ctx context.Context, q pipeline.SettledQuery) (pipeline.Page, error)
}

// ErrClosed ends every follower when the backend stops, so that clients resume
// on another replica (or this one, restarted) instead of being cut at the end
// of the shutdown's grace period.
var ErrClosed = errors.New("the backend is stopping")

// ErrTooSlow cuts a follower that left Config.Buffer documents untaken for
// longer than the poller waits.
var ErrTooSlow = errors.New("the client did not keep up with new documents")

// Hub serves every follower of one backend.
type Hub struct {
	cfg   Config
	floor Floor
	store Store
	log   *slog.Logger
	// offerWait is how long a step waits for a follower with a full buffer.
	offerWait time.Duration
	observe   func(step time.Duration, docs int, err error)

	mu      sync.Mutex
	pollers map[string]*poller // by fields asked for
	closed  bool
}

// Close ends every follower with ErrClosed, and refuses new ones.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	ps := slices.Collect(maps.Values(h.pollers))
	h.mu.Unlock()
	for _, p := range ps {
		for _, f := range p.followers() {
			f.fail(ErrClosed)
		}
	}
}

// NewHub returns a hub that reads the floor and the store for its followers.
// observe, when not nil, is told of each step that found new documents, and of
// each that failed.
func NewHub(cfg Config, floor Floor, st Store, log *slog.Logger, observe func(step time.Duration, docs int, err error)) *Hub {
	cfg = cfg.withDefaults()
	return &Hub{cfg: cfg, floor: floor, store: st, log: log, offerWait: 10 * time.Second, observe: observe, pollers: map[string]*poller{}}
}

// Wake tells the followers' pollers that the floor may have moved, so that they
// step now rather than at their next poll. The webserver's notice after each
// settled batch calls it; a lost or early wake-up costs at most a poll interval,
// since the floor, read at each step, is the only proof of what is settled.
func (h *Hub) Wake() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.pollers {
		p.wake()
	}
}

// Start is where a follow begins: its history covers @nats.seq ≤ the returned
// floor, which is searchable when Start returns.
func (h *Hub) Start(ctx context.Context) (uint64, error) {
	f, err := h.floor.Settled(ctx)
	if err != nil {
		return 0, err
	}
	if err := h.store.Refresh(ctx); err != nil {
		return 0, err
	}
	return f, nil
}

// PollInterval is how often the steps run.
func (h *Hub) PollInterval() time.Duration { return h.cfg.PollInterval }

// Follower is one client's subscription, from Follow to Close.
type Follower struct {
	from, to time.Time
	fields   []string
	filter   any    // an Elasticsearch query; nil: every document
	name     string // the filter's name in the shared steps, once joined
	hub      *Hub
	p        *poller
	pos      uint64 // every document of the range up to this sequence has been taken

	mu     sync.Mutex
	queue  pipeline.Page
	floor  uint64
	err    error
	ready  chan struct{} // signalled when something was queued or an error set
	space  chan struct{} // signalled when the queue was taken
	closed chan struct{}
}

// maxCatchUps bounds the rounds a follower may need to reach the shared steps;
// one that has not after that reads slower than documents arrive.
const maxCatchUps = 20

// Follow subscribes to the documents of [from, to) that match filter (an
// Elasticsearch query; nil for all) created by messages after sequence pos,
// which the caller has already sent (its history, or a cursor).
// When the shared steps are ahead of pos, the documents in between are read
// first and passed to send, page by page, so that memory stays bounded however
// far behind the follower starts; then the follower joins the steps.
func (h *Hub) Follow(ctx context.Context, pos uint64, from, to time.Time, fields []string, filter any, send func(pipeline.Page) error) (*Follower, error) {
	key := strings.Join(fields, "\x00")
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	p := h.pollers[key]
	if p == nil {
		p = &poller{hub: h, fields: fields, subs: map[*Follower]struct{}{}, filters: map[string]*sharedFilter{}, woken: make(chan struct{}, 1)}
		h.pollers[key] = p
	}
	h.mu.Unlock()
	f := &Follower{from: from, to: to, fields: fields, filter: filter, hub: h, p: p, pos: pos,
		ready: make(chan struct{}, 1), space: make(chan struct{}, 1), closed: make(chan struct{})}
	for range maxCatchUps {
		ahead, joined := p.join(f)
		if joined {
			return f, nil
		}
		if err := f.catchUp(ctx, ahead, send); err != nil {
			return nil, err
		}
	}
	// Steps a notice apart can outrun a catch-up whose query is slower than
	// they are; the last way in holds them for one read of the gap.
	if err := p.joinHoldingSteps(ctx, f); err != nil {
		return nil, err
	}
	return f, nil
}

// Ready is signalled when Next has something: documents, a higher floor, or the
// end of the subscription.
func (f *Follower) Ready() <-chan struct{} { return f.ready }

// Next takes what the steps have queued: documents in sequence order with their
// keys, and the floor they reach (every document of the range up to it has now
// been handed out). err is ErrTooSlow or ErrClosed; after it the follower is
// done.
func (f *Follower) Next() (pipeline.Page, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	page, floor, err := f.queue, f.floor, f.err
	f.queue = pipeline.Page{}
	select {
	case f.space <- struct{}{}:
	default:
	}
	return page, floor, err
}

// Close ends the subscription.
func (f *Follower) Close() {
	f.p.leave(f)
}

// offer queues a step's documents for f, waiting up to wait for room; a follower
// that stays full is cut. It reports whether f is still subscribed.
func (f *Follower) offer(page pipeline.Page, floor uint64, wait time.Duration) bool {
	var timeout <-chan time.Time
	for {
		f.mu.Lock()
		if f.err != nil {
			f.mu.Unlock()
			return false
		}
		if len(f.queue.Docs) == 0 || len(f.queue.Docs)+len(page.Docs) <= f.hub.cfg.Buffer {
			f.queue.Docs = append(f.queue.Docs, page.Docs...)
			f.queue.Keys = append(f.queue.Keys, page.Keys...)
			f.floor = max(f.floor, floor)
			f.mu.Unlock()
			f.signal()
			return true
		}
		f.mu.Unlock()
		if timeout == nil {
			timeout = time.After(wait)
		}
		select {
		case <-f.space:
		case <-f.closed:
			return false
		case <-timeout:
			f.fail(ErrTooSlow)
			return false
		}
	}
}

func (f *Follower) fail(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
		f.queue = pipeline.Page{} // what it could not take is dropped with it
	}
	f.mu.Unlock()
	f.signal()
}

func (f *Follower) signal() {
	select {
	case f.ready <- struct{}{}:
	default:
	}
}

// inRange keeps the documents of page in f's range, with sequences past pos,
// that matched f's filter.
func (f *Follower) inRange(page pipeline.Page, pos uint64) pipeline.Page {
	var out pipeline.Page
	from, to := f.from.UnixMilli(), f.to.UnixMilli()
	for i, k := range page.Keys {
		if k.Seq > pos && k.Time >= from && k.Time < to && (f.name == "" || slices.Contains(page.Matched[i], f.name)) {
			out.Docs = append(out.Docs, page.Docs[i])
			out.Keys = append(out.Keys, k)
		}
	}
	return out
}

// poller runs the shared steps of the followers that ask for the same fields.
type poller struct {
	hub    *Hub
	fields []string
	// woken holds a wake-up (Hub.Wake) until the running poller takes it.
	woken chan struct{}

	// step is held for a whole step, and by join: a follower joins between
	// steps, so it gets every step after the position it joined at, whole.
	step sync.Mutex
	last uint64 // every step up to here has been handed to the followers

	mu      sync.Mutex
	subs    map[*Follower]struct{}
	filters map[string]*sharedFilter // by the filter's JSON
	named   int                      // filters named so far
	running bool
}

// sharedFilter is one filter of the followers of a poller, under its name in
// the shared query.
type sharedFilter struct {
	name  string
	query any
	users int
}

// unfiltered names, in the shared query, the followers without a filter.
const unfiltered = "all"

// join adds f, unless the steps have gone past f's position: then it returns
// how far they have, for f to catch up to first.
func (p *poller) join(f *Follower) (ahead uint64, joined bool) {
	p.step.Lock()
	defer p.step.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.subs) == 0 {
		// Nobody to serve since the last step: begin where the newcomer is.
		p.last = f.pos
	}
	if p.last > f.pos {
		return p.last, false
	}
	p.subscribe(f)
	return 0, true
}

// joinHoldingSteps joins f after reading, with the steps held, the documents of
// its range between its position and the steps' into its queue: the steps wait
// for that one query, never for the client. A gap larger than the follower's
// buffer is ErrTooSlow, as a full buffer is.
func (p *poller) joinHoldingSteps(ctx context.Context, f *Follower) error {
	p.step.Lock()
	defer p.step.Unlock()
	p.mu.Lock()
	upTo := p.last
	if len(p.subs) == 0 {
		upTo = f.pos
	}
	p.mu.Unlock()
	var gap pipeline.Page
	err := f.catchUp(ctx, upTo, func(page pipeline.Page) error {
		if len(gap.Docs)+len(page.Docs) > f.hub.cfg.Buffer {
			return ErrTooSlow
		}
		gap.Docs = append(gap.Docs, page.Docs...)
		gap.Keys = append(gap.Keys, page.Keys...)
		return nil
	})
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.queue, f.floor = gap, upTo
	f.mu.Unlock()
	f.signal()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.subs) == 0 {
		p.last = upTo
	}
	p.subscribe(f)
	return nil
}

// subscribe adds f to the steps, its filter to the shared query, and starts
// the steps if they were not running. p.mu and p.step are held.
func (p *poller) subscribe(f *Follower) {
	p.subs[f] = struct{}{}
	if f.filter != nil {
		key := filterKey(f.filter)
		sf := p.filters[key]
		if sf == nil {
			p.named++
			sf = &sharedFilter{name: "q" + strconv.Itoa(p.named), query: f.filter}
			p.filters[key] = sf
		}
		sf.users++
		f.name = sf.name
	}
	if !p.running {
		p.running = true
		go p.run()
	}
}

// catchUp sends the documents of f's range in (f.pos, upTo], which the steps
// handed out before f joined; the step that reached upTo refreshed them.
func (f *Follower) catchUp(ctx context.Context, upTo uint64, send func(pipeline.Page) error) error {
	for f.pos < upTo {
		q := pipeline.SettledQuery{After: f.pos, UpTo: upTo, From: f.from, To: f.to, Size: f.hub.cfg.PageSize, Fields: f.fields}
		if f.filter != nil {
			q.Filters = map[string]any{"self": f.filter}
		}
		page, err := f.hub.store.Settled(ctx, q)
		if err != nil {
			return err
		}
		if len(page.Docs) > 0 {
			if err := send(page); err != nil {
				return err
			}
		}
		if len(page.Docs) < f.hub.cfg.PageSize {
			break
		}
		f.pos = page.Keys[len(page.Keys)-1].Seq
	}
	f.pos = upTo
	return nil
}

func (p *poller) leave(f *Follower) {
	p.mu.Lock()
	if _, ok := p.subs[f]; ok && f.filter != nil {
		key := filterKey(f.filter)
		if sf := p.filters[key]; sf != nil {
			if sf.users--; sf.users == 0 {
				delete(p.filters, key)
			}
		}
	}
	delete(p.subs, f)
	p.mu.Unlock()
	select {
	case <-f.closed:
	default:
		close(f.closed)
	}
}

// run steps while anyone follows: when woken, and every poll interval in case
// a wake-up was lost. Steps that go to Elasticsearch are never closer than
// MinStepInterval, which bounds the refreshes this backend asks for; a step that
// only read an unmoved floor does not count, or a notice arriving just after a
// poll would wait out the interval for nothing.
func (p *poller) run() {
	t := time.NewTicker(p.hub.cfg.PollInterval)
	defer t.Stop()
	var searched time.Time // when the last step that refreshed and searched began
	for {
		select {
		case <-t.C:
			if time.Since(searched) < p.hub.cfg.MinStepInterval {
				continue // a wake-up just stepped
			}
		case <-p.woken:
			time.Sleep(p.hub.cfg.MinStepInterval - time.Since(searched))
		}
		p.mu.Lock()
		if len(p.subs) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		if began := time.Now(); p.once() {
			searched = began
		}
	}
}

// wake asks the poller for a step, unless one is asked for already.
func (p *poller) wake() {
	select {
	case p.woken <- struct{}{}:
	default:
	}
}

// once runs one step: the new floor, and when it moved, a refresh and the
// documents up to it. It says whether it went beyond reading the floor.
func (p *poller) once() (searched bool) {
	p.step.Lock()
	defer p.step.Unlock()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	floor, err := p.hub.floor.Settled(ctx)
	if err == nil && floor > p.last {
		searched = true
		var n int
		n, err = p.deliver(ctx, floor)
		if err == nil {
			p.last = floor
			p.hub.observed(time.Since(start), n, nil)
		}
	}
	if err != nil {
		// Followers wait and keep their heartbeats: the next step retries.
		p.hub.log.Warn("follow step failed; retrying at the next poll", "err", err)
		p.hub.observed(time.Since(start), 0, err)
	}
	return searched
}

// deliver hands the documents with sequences in (p.last, floor] to the
// followers whose range they fall in, and the floor to all.
func (p *poller) deliver(ctx context.Context, floor uint64) (int, error) {
	subs, filters := p.followersAndFilters()
	if len(subs) == 0 {
		// The last follower left after run looked: nobody to deliver to, and
		// the next one to join sets where the steps begin.
		return 0, nil
	}
	if err := p.hub.store.Refresh(ctx); err != nil {
		return 0, err
	}
	from, to := span(subs)
	after, n := p.last, 0
	for {
		page, err := p.hub.store.Settled(ctx, pipeline.SettledQuery{After: after, UpTo: floor, From: from, To: to,
			Size: p.hub.cfg.PageSize, Fields: p.fields, Filters: filters})
		if err != nil {
			return n, err
		}
		n += len(page.Docs)
		last := len(page.Docs) < p.hub.cfg.PageSize
		reached := floor
		if !last {
			reached = page.Keys[len(page.Keys)-1].Seq
		}
		for _, f := range subs {
			if !f.offer(f.inRange(page, f.pos), reached, p.hub.offerWait) {
				p.leave(f)
			}
		}
		if last {
			return n, nil
		}
		after = reached
	}
}

// followersAndFilters are the followers, and the filters of the shared query:
// none when no follower has one, and with a filter that matches everything
// for those without one, when others do.
func (p *poller) followersAndFilters() ([]*Follower, map[string]any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	subs := make([]*Follower, 0, len(p.subs))
	all := false
	for f := range p.subs {
		subs = append(subs, f)
		all = all || f.filter == nil
	}
	if len(p.filters) == 0 {
		return subs, nil
	}
	filters := make(map[string]any, len(p.filters)+1)
	for _, sf := range p.filters {
		filters[sf.name] = sf.query
	}
	if all {
		filters[unfiltered] = map[string]any{"match_all": map[string]any{}}
	}
	return subs, filters
}

// filterKey tells filters apart: encoding/json writes a map's keys in order,
// so equal queries have equal keys.
func filterKey(filter any) string {
	b, err := json.Marshal(filter)
	if err != nil {
		// Built by package query from plain values: it always encodes.
		panic("follow: a filter that does not encode: " + err.Error())
	}
	return string(b)
}

func (p *poller) followers() []*Follower {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Follower, 0, len(p.subs))
	for f := range p.subs {
		out = append(out, f)
	}
	return out
}

// span is the union of the followers' ranges.
func span(subs []*Follower) (from, to time.Time) {
	from, to = subs[0].from, subs[0].to
	for _, f := range subs[1:] {
		if f.from.Before(from) {
			from = f.from
		}
		if f.to.After(to) {
			to = f.to
		}
	}
	return from, to
}

func (h *Hub) observed(d time.Duration, docs int, err error) {
	if h.observe != nil {
		h.observe(d, docs, err)
	}
}
