package follow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// The hub against a fake floor and store: sequences are settled when the test
// says so, and a document's time is its sequence in milliseconds unless the test
// places it elsewhere.

type fakeFloor struct {
	mu    sync.Mutex
	floor uint64
}

func (f *fakeFloor) Settled(context.Context) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.floor, nil
}

func (f *fakeFloor) PublishedBefore(context.Context, time.Time) (uint64, bool, error) {
	return 0, false, errors.New("not used")
}

func (f *fakeFloor) set(n uint64) {
	f.mu.Lock()
	f.floor = n
	f.mu.Unlock()
}

type fakeStore struct {
	mu   sync.Mutex
	docs []pipeline.Key // by sequence
}

func (s *fakeStore) Refresh(context.Context) error { return nil }

func (s *fakeStore) Settled(_ context.Context, after, upTo uint64, from, to time.Time, size int, _ []string) (pipeline.Page, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var p pipeline.Page
	for _, k := range s.docs {
		if k.Seq > after && k.Seq <= upTo && k.Time >= from.UnixMilli() && k.Time < to.UnixMilli() && len(p.Docs) < size {
			p.Docs = append(p.Docs, fmt.Appendf(nil, "doc-%d", k.Seq))
			p.Keys = append(p.Keys, k)
		}
	}
	return p, nil
}

// index stores documents for sequences from..to, each at its sequence in ms.
func (s *fakeStore) index(from, to uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for seq := from; seq <= to; seq++ {
		s.docs = append(s.docs, pipeline.Key{Seq: seq, Time: int64(seq)})
	}
}

func newTestHub(buffer int) (*Hub, *fakeFloor, *fakeStore) {
	fl, st := &fakeFloor{}, &fakeStore{}
	h := NewHub(Config{PollInterval: 5 * time.Millisecond, Buffer: buffer, PageSize: 7}, fl, st, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	h.offerWait = 50 * time.Millisecond
	return h, fl, st
}

func ms(n int64) time.Time { return time.UnixMilli(n) }

// collect takes what f is handed until it has reached floor, and returns the
// sequences of the documents.
func collect(t *testing.T, f *Follower, floor uint64) []uint64 {
	t.Helper()
	var seqs []uint64
	for timeout := time.After(5 * time.Second); ; {
		select {
		case <-f.Ready():
			page, reached, err := f.Next()
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			for _, k := range page.Keys {
				seqs = append(seqs, k.Seq)
			}
			if reached >= floor {
				return seqs
			}
		case <-timeout:
			t.Fatalf("floor %d not reached; got %v", floor, seqs)
		}
	}
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestHistoryAndStepsPartitionTheSequences(t *testing.T) {
	h, fl, st := newTestHub(1000)
	st.index(1, 50)
	fl.set(50)
	ctx := context.Background()
	f0, err := h.Start(ctx) // the history would cover 1..50
	if err != nil || f0 != 50 {
		t.Fatalf("Start = %d, %v; want 50", f0, err)
	}
	f, err := h.Follow(ctx, f0, ms(0), ms(1000), nil, func(pipeline.Page) error { t.Fatal("nothing to catch up"); return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []uint64
	for _, upTo := range []uint64{51, 70, 130} {
		st.index(uint64(len(st.docs))+1, upTo)
		fl.set(upTo)
		got = append(got, collect(t, f, upTo)...)
	}
	if want := seqRange(51, 130); !slices.Equal(got, want) {
		t.Errorf("steps handed out %v, want %v", got, want)
	}
}

func TestAFollowerJoiningBehindTheStepsCatchesUpExactly(t *testing.T) {
	h, fl, st := newTestHub(1000)
	ctx := context.Background()
	st.index(1, 10)
	fl.set(10)
	a, err := h.Follow(ctx, 10, ms(0), ms(1000), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	st.index(11, 80)
	fl.set(80)
	collect(t, a, 80) // the steps are at 80

	var caught []uint64
	b, err := h.Follow(ctx, 30, ms(0), ms(1000), nil, func(p pipeline.Page) error {
		for _, k := range p.Keys {
			caught = append(caught, k.Seq)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st.index(81, 100)
	fl.set(100)
	got := append(caught, collect(t, b, 100)...)
	if want := seqRange(31, 100); !slices.Equal(got, want) {
		t.Errorf("caught up and followed %v, want %v", got, want)
	}
}

func TestAFollowerThatTakesNothingIsCutTooSlow(t *testing.T) {
	h, fl, st := newTestHub(5)
	ctx := context.Background()
	f, err := h.Follow(ctx, 0, ms(0), ms(1000), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st.index(1, 20)
	fl.set(20)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		f.mu.Lock()
		cut := f.err != nil
		f.mu.Unlock()
		if cut {
			break
		}
	}
	page, _, err := f.Next()
	if !errors.Is(err, ErrTooSlow) || len(page.Docs) != 0 {
		t.Errorf("Next = %d documents, %v; want none and ErrTooSlow", len(page.Docs), err)
	}
	if n := h.Followers(); n != 0 {
		t.Errorf("%d followers left after the cut, want 0", n)
	}
}

func TestFollowersOfDifferentRangesGetOnlyTheirDocuments(t *testing.T) {
	h, fl, st := newTestHub(1000)
	ctx := context.Background()
	early, err := h.Follow(ctx, 0, ms(0), ms(50), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	late, err := h.Follow(ctx, 0, ms(50), ms(1000), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	st.index(1, 100)
	// A late event: sequence 101 at time 10 belongs to the early range.
	st.mu.Lock()
	st.docs = append(st.docs, pipeline.Key{Seq: 101, Time: 10})
	st.mu.Unlock()
	fl.set(101)
	if got, want := collect(t, early, 101), append(seqRange(1, 49), 101); !slices.Equal(got, want) {
		t.Errorf("early range got %v, want %v", got, want)
	}
	if got, want := collect(t, late, 101), seqRange(50, 100); !slices.Equal(got, want) {
		t.Errorf("late range got %v, want %v", got, want)
	}
}

func TestAStepAfterTheLastFollowerLeftDoesNotFail(t *testing.T) {
	h, fl, st := newTestHub(1000)
	ctx := context.Background()
	f, err := h.Follow(ctx, 0, ms(0), ms(1000), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := f.p
	f.Close()
	st.index(1, 5)
	fl.set(5)
	p.once() // what run does when the follower leaves between its check and the step
}
