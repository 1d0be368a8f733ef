package follow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// fakeFloor is the webserver's progress, moved by the test.
type fakeFloor struct {
	mu    sync.Mutex
	floor uint64
}

func (f *fakeFloor) set(n uint64) { f.mu.Lock(); f.floor = n; f.mu.Unlock() }

func (f *fakeFloor) Settled(context.Context) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.floor, nil
}

// fakeStore holds documents by sequence; a document's body is its sequence.
type fakeStore struct {
	mu      sync.Mutex
	docs    map[uint64]int64 // seq → @timestamp (ms)
	queries int
}

func (s *fakeStore) add(seq uint64, at int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.docs == nil {
		s.docs = map[uint64]int64{}
	}
	s.docs[seq] = at
}

func (s *fakeStore) Refresh(context.Context) error { return nil }

// Its filters are multiples: {"every": n} matches the sequences n divides,
// and a match_all query every sequence.
func (s *fakeStore) Settled(_ context.Context, q pipeline.SettledQuery) (pipeline.Page, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries++
	matched := func(seq uint64) []string {
		var names []string
		for name, f := range q.Filters {
			if n, ok := f.(map[string]any)["every"].(int); !ok || seq%uint64(n) == 0 {
				names = append(names, name)
			}
		}
		return names
	}
	var seqs []uint64
	for seq, at := range s.docs {
		if seq > q.After && seq <= q.UpTo && at >= q.From.UnixMilli() && at < q.To.UnixMilli() &&
			(len(q.Filters) == 0 || len(matched(seq)) > 0) {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	var p pipeline.Page
	for _, seq := range seqs[:min(q.Size, len(seqs))] {
		p.Docs = append(p.Docs, fmt.Appendf(nil, "%d", seq))
		p.Keys = append(p.Keys, pipeline.Key{Time: s.docs[seq], Seq: seq})
		if len(q.Filters) > 0 {
			p.Matched = append(p.Matched, matched(seq))
		}
	}
	return p, nil
}

func newTestHub(floor *fakeFloor, st *fakeStore, buffer int) *Hub {
	return NewHub(Config{PollInterval: 5 * time.Millisecond, PageSize: 7, Buffer: buffer}, floor, st, slog.New(slog.DiscardHandler), nil)
}

var (
	epoch = time.UnixMilli(0)
	never = time.UnixMilli(1 << 50)
)

// collect takes a follower's documents until its floor reaches upTo, and
// returns their sequences.
func collect(t *testing.T, f *Follower, got []uint64, upTo uint64) []uint64 {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case <-f.Ready():
			page, floor, err := f.Next()
			if err != nil {
				t.Fatalf("follower ended: %v", err)
			}
			for _, k := range page.Keys {
				got = append(got, k.Seq)
			}
			if floor >= upTo {
				return got
			}
		case <-deadline:
			t.Fatalf("the follower's floor did not reach %d; got %v", upTo, got)
		}
	}
}

func seqs(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestAFollowerGetsEveryDocumentAfterItsPositionOnceInSequenceOrder(t *testing.T) {
	floor, st := &fakeFloor{}, &fakeStore{}
	for seq := uint64(1); seq <= 10; seq++ {
		st.add(seq, int64(seq))
	}
	floor.set(10)
	h := newTestHub(floor, st, 1000)
	f, err := h.Follow(t.Context(), 10, epoch, never, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// Documents arrive out of order and late, some become visible only with a
	// later floor (in flight at the first), and a gap is never filled
	// (a dead-lettered message).
	var got []uint64
	for _, step := range []struct {
		docs  []uint64
		floor uint64
	}{
		{[]uint64{12, 11, 14}, 12}, {[]uint64{13, 15, 16}, 16}, {[]uint64{18, 19, 20, 21, 22, 23, 24, 25, 26, 27}, 27},
	} {
		for _, seq := range step.docs {
			st.add(seq, int64(1000-seq)) // live documents are late: older @timestamps
		}
		floor.set(step.floor)
		got = collect(t, f, got, step.floor)
	}
	want := append(seqs(11, 16), seqs(18, 27)...)
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v: each document after 10 once, by sequence", got, want)
	}
}

func TestAFollowerJoiningBehindTheStepsCatchesUpBeforeTakingThem(t *testing.T) {
	floor, st := &fakeFloor{}, &fakeStore{}
	h := newTestHub(floor, st, 1000)
	first, err := h.Follow(t.Context(), 0, epoch, never, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	for seq := uint64(1); seq <= 40; seq++ {
		st.add(seq, int64(seq))
	}
	floor.set(40)
	collect(t, first, nil, 40) // the steps are at 40

	var caughtUp []uint64
	second, err := h.Follow(t.Context(), 15, epoch, never, nil, nil, func(p pipeline.Page) error {
		for _, k := range p.Keys {
			caughtUp = append(caughtUp, k.Seq)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if !slices.Equal(caughtUp, seqs(16, 40)) {
		t.Errorf("caught up on %v, want 16..40", caughtUp)
	}
	for seq := uint64(41); seq <= 45; seq++ {
		st.add(seq, int64(seq))
	}
	floor.set(45)
	if got := collect(t, second, nil, 45); !slices.Equal(got, seqs(41, 45)) {
		t.Errorf("then took %v, want 41..45", got)
	}
}

func TestFollowersOfDifferentRangesShareOneQueryAndGetOnlyTheirOwnDocuments(t *testing.T) {
	floor, st := &fakeFloor{}, &fakeStore{}
	h := newTestHub(floor, st, 1000)
	early, err := h.Follow(t.Context(), 0, time.UnixMilli(0), time.UnixMilli(100), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	late, err := h.Follow(t.Context(), 0, time.UnixMilli(100), time.UnixMilli(200), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	for seq := uint64(1); seq <= 6; seq++ {
		st.add(seq, int64(seq%2)*150) // odd: 150, even: 0
	}
	st.mu.Lock()
	st.queries = 0
	st.mu.Unlock()
	floor.set(6)
	if got := collect(t, early, nil, 6); !slices.Equal(got, []uint64{2, 4, 6}) {
		t.Errorf("early range got %v, want 2 4 6", got)
	}
	if got := collect(t, late, nil, 6); !slices.Equal(got, []uint64{1, 3, 5}) {
		t.Errorf("late range got %v, want 1 3 5", got)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.queries != 1 {
		t.Errorf("%d queries for one step of two followers, want 1", st.queries)
	}
}

func TestAFollowerThatTakesNothingIsCutAndTheOthersGoOn(t *testing.T) {
	floor, st := &fakeFloor{}, &fakeStore{}
	h := newTestHub(floor, st, 10)
	h.offerWait = 20 * time.Millisecond
	stuck, err := h.Follow(t.Context(), 0, epoch, never, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	reader, err := h.Follow(t.Context(), 0, epoch, never, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	for seq := uint64(1); seq <= 30; seq++ {
		st.add(seq, int64(seq))
	}
	floor.set(30)
	if got := collect(t, reader, nil, 30); !slices.Equal(got, seqs(1, 30)) {
		t.Errorf("the reading follower got %v, want 1..30", got)
	}
	for range 2 { // the signal may be for documents queued before the cut
		<-stuck.Ready()
		if _, _, err := stuck.Next(); errors.Is(err, ErrTooSlow) {
			return
		}
	}
	t.Error("the follower that took nothing was not cut with ErrTooSlow")
}

func TestClosingTheHubEndsEveryFollowerAndRefusesNewOnes(t *testing.T) {
	h := newTestHub(&fakeFloor{}, &fakeStore{}, 10)
	f, err := h.Follow(t.Context(), 0, epoch, never, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	<-f.Ready()
	if _, _, err := f.Next(); !errors.Is(err, ErrClosed) {
		t.Errorf("follower after Close: %v, want ErrClosed", err)
	}
	if _, err := h.Follow(t.Context(), 0, epoch, never, nil, nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Follow after Close: %v, want ErrClosed", err)
	}
}

func TestAStepAfterTheLastFollowerLeftDoesNotFail(t *testing.T) {
	floor, st := &fakeFloor{}, &fakeStore{}
	h := newTestHub(floor, st, 1000)
	f, err := h.Follow(t.Context(), 0, epoch, never, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := f.p
	f.Close()
	for seq := uint64(1); seq <= 5; seq++ {
		st.add(seq, int64(seq))
	}
	floor.set(5)
	p.once() // what run does when the follower leaves between its check and the step
}

// Followers with different filters, and one without, share the steps: one
// query per page however many filters, and each gets exactly the documents of
// its own, from that query's answer.
func TestFollowersWithDifferentFiltersShareOneQueryPerStep(t *testing.T) {
	floor, st := &fakeFloor{}, &fakeStore{}
	h := newTestHub(floor, st, 1000)
	every := func(n int) any { return map[string]any{"every": n} }
	var followers []*Follower
	for _, filter := range []any{every(2), every(3), nil, every(2), every(5)} {
		f, err := h.Follow(t.Context(), 0, epoch, never, nil, filter, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		followers = append(followers, f)
	}
	for seq := uint64(1); seq <= 6; seq++ { // less than a page (7)
		st.add(seq, int64(seq))
	}
	st.mu.Lock()
	before := st.queries
	st.mu.Unlock()
	floor.set(6)
	got := make([][]uint64, len(followers))
	for i, f := range followers {
		got[i] = collect(t, f, nil, 6)
	}
	want := [][]uint64{{2, 4, 6}, {3, 6}, seqs(1, 6), {2, 4, 6}, {5}}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("follower %d got %v, want %v", i, got[i], want[i])
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.queries - before; n != 1 {
		t.Errorf("the step took %d queries for 4 filters; want 1", n)
	}
}

// A filtered follower joining behind the steps catches up on its own
// filter's documents alone.
func TestAFilteredFollowerCatchesUpOnItsOwnDocuments(t *testing.T) {
	floor, st := &fakeFloor{}, &fakeStore{}
	h := newTestHub(floor, st, 1000)
	first, err := h.Follow(t.Context(), 0, epoch, never, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	for seq := uint64(1); seq <= 20; seq++ {
		st.add(seq, int64(seq))
	}
	floor.set(20)
	collect(t, first, nil, 20)

	var caught []uint64
	second, err := h.Follow(t.Context(), 0, epoch, never, nil, map[string]any{"every": 4}, func(p pipeline.Page) error {
		for _, k := range p.Keys {
			caught = append(caught, k.Seq)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if want := []uint64{4, 8, 12, 16, 20}; !slices.Equal(caught, want) {
		t.Errorf("caught up on %v, want %v", caught, want)
	}
}

// A notice makes the step at once, where polling alone would wait its interval.
func TestANoticeStepsAtOnceWithoutWaitingForThePoll(t *testing.T) {
	floor, st := &fakeFloor{}, &fakeStore{}
	h := NewHub(Config{PollInterval: time.Hour, MinStepInterval: time.Millisecond, PageSize: 7, Buffer: 100}, floor, st, slog.New(slog.DiscardHandler), nil)
	f, err := h.Follow(t.Context(), 0, epoch, never, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for seq := uint64(1); seq <= 3; seq++ {
		st.add(seq, int64(seq))
	}
	floor.set(3)
	h.Wake()
	if got := collect(t, f, nil, 3); !slices.Equal(got, seqs(1, 3)) {
		t.Errorf("after the notice, got %v, want 1..3", got)
	}
}

// A notice that comes before the floor moves (the acks still on their way) finds
// nothing; the documents come with the next step, by notice or by poll, each
// once; and notices that are never sent only make followers wait for the poll.
func TestEarlyOrLostNoticesDelayDocumentsButNeverSkipThem(t *testing.T) {
	floor, st := &fakeFloor{}, &fakeStore{}
	h := NewHub(Config{PollInterval: 50 * time.Millisecond, MinStepInterval: time.Millisecond, PageSize: 7, Buffer: 100}, floor, st, slog.New(slog.DiscardHandler), nil)
	f, err := h.Follow(t.Context(), 0, epoch, never, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for seq := uint64(1); seq <= 5; seq++ {
		st.add(seq, int64(seq))
	}
	h.Wake() // early: the floor is still 0
	time.Sleep(20 * time.Millisecond)
	floor.set(5) // no notice for this one: the poll finds it
	got := collect(t, f, nil, 5)
	for seq := uint64(6); seq <= 9; seq++ {
		st.add(seq, int64(seq))
	}
	floor.set(9)
	h.Wake()
	if got = collect(t, f, got, 9); !slices.Equal(got, seqs(1, 9)) {
		t.Errorf("got %v, want 1..9 once each", got)
	}
}

// However many notices come, the steps, and with them the refreshes, keep
// MinStepInterval apart.
func TestNoticesNeverStepMoreOftenThanTheMinimumInterval(t *testing.T) {
	floor, st := &fakeFloor{}, &countingStore{}
	h := NewHub(Config{PollInterval: time.Hour, MinStepInterval: 50 * time.Millisecond, PageSize: 7, Buffer: 100}, floor, st, slog.New(slog.DiscardHandler), nil)
	f, err := h.Follow(t.Context(), 0, epoch, never, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	begin := st.refreshes.Load()
	deadline := time.Now().Add(500 * time.Millisecond)
	for n := uint64(1); time.Now().Before(deadline); n++ {
		floor.set(n) // every notice finds the floor moved
		h.Wake()
		time.Sleep(time.Millisecond)
	}
	// An upper bound only: a loaded machine may step less often, never more.
	if steps := st.refreshes.Load() - begin; steps > 11 || steps == 0 {
		t.Errorf("%d refreshes in 500ms of notices every millisecond, want at most 11 (one per 50ms) and some", steps)
	}
}

// The minimum interval is between steps that refresh: polls that found the
// floor where it was do not count, so a notice right after one steps at once.
func TestANoticeRightAfterAnIdlePollIsNotHeldBack(t *testing.T) {
	floor, st := &fakeFloor{}, &countingStore{}
	h := NewHub(Config{PollInterval: 10 * time.Millisecond, MinStepInterval: time.Hour, PageSize: 7, Buffer: 100}, floor, st, slog.New(slog.DiscardHandler), nil)
	f, err := h.Follow(t.Context(), 0, epoch, never, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	time.Sleep(50 * time.Millisecond) // idle polls: the floor stays at 0
	st.add(1, 1)
	floor.set(1)
	h.Wake()
	// collect fails after 5 s, far less than the hour an idle poll would hold it.
	if got := collect(t, f, nil, 1); !slices.Equal(got, []uint64{1}) {
		t.Errorf("got %v, want [1]", got)
	}
}

// countingStore is an empty store that counts refreshes, one per step.
type countingStore struct {
	fakeStore
	refreshes atomic.Int64
}

func (s *countingStore) Refresh(context.Context) error { s.refreshes.Add(1); return nil }

// slowSelfStore is a fakeStore whose catch-up queries (a follower's own filter,
// "self") take delay: slower than the steps, which notices make frequent.
type slowSelfStore struct {
	fakeStore
	delay time.Duration
}

func (s *slowSelfStore) Settled(ctx context.Context, q pipeline.SettledQuery) (pipeline.Page, error) {
	if _, self := q.Filters["self"]; self {
		time.Sleep(s.delay)
	}
	return s.fakeStore.Settled(ctx, q)
}

// A follower whose catch-up is slower than the steps never reaches them by
// itself; it joins all the same, with every document once, by holding the
// steps for one read of what is left.
func TestAFollowerTheStepsKeepOutrunningStillJoinsWithEveryDocument(t *testing.T) {
	// Each catch-up round takes a query of 5 ms, in which the steps, a
	// millisecond apart, move on by two or three documents.
	floor, st := &fakeFloor{}, &slowSelfStore{delay: 5 * time.Millisecond}
	h := NewHub(Config{PollInterval: time.Millisecond, MinStepInterval: time.Millisecond, PageSize: 100, Buffer: 10000}, floor, st, slog.New(slog.DiscardHandler), nil)
	first, err := h.Follow(t.Context(), 0, epoch, never, nil, nil, nil) // keeps the steps going
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	go func() {
		for range first.Ready() {
			if _, _, err := first.Next(); err != nil {
				return
			}
		}
	}()
	var seq atomic.Uint64
	stop := make(chan struct{})
	moved := make(chan struct{})
	go func() {
		defer close(moved)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			n := seq.Add(1)
			st.add(n, int64(n))
			floor.set(n)
		}
	}()
	time.Sleep(20 * time.Millisecond)
	var caughtUp []uint64
	second, err := h.Follow(t.Context(), 0, epoch, never, nil, map[string]any{"every": 1}, func(p pipeline.Page) error {
		for _, k := range p.Keys {
			caughtUp = append(caughtUp, k.Seq)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the outrun follower did not join: %v", err)
	}
	defer second.Close()
	close(stop)
	<-moved
	last := seq.Load()
	got := collect(t, second, caughtUp, last)
	if !slices.Equal(got, seqs(1, last)) {
		t.Errorf("got %d documents (%v…), want 1..%d once each, in order", len(got), got[:min(10, len(got))], last)
	}
}
