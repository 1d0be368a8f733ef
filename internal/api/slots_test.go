package api

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// stalledStream is a holder that has waited stall for its client; preempting
// it ends it (gives its slot back) at once.
type stalledStream struct {
	stall     time.Duration
	release   func()
	preempted bool
}

func (s *stalledStream) stalled(time.Time) time.Duration { return s.stall }
func (s *stalledStream) preempt() {
	s.preempted = true
	go s.release() // as a handler would, on its own goroutine
}

// fill takes a slot for each stall, each for a client of its own.
func fill(t *testing.T, slots *streamSlots, stalls ...time.Duration) []*stalledStream {
	t.Helper()
	var held []*stalledStream
	for i, d := range stalls {
		s := &stalledStream{stall: d}
		release, _, no := slots.acquire(context.Background(), string(rune('a'+i)), s)
		if no != nil {
			t.Fatalf("filling slot %d: %d %s", i, no.status, no.Code)
		}
		s.release = release
		held = append(held, s)
	}
	return held
}

func TestAFullPoolGivesTheSlotOfTheLongestStalledStreamToANewcomer(t *testing.T) {
	slots := newStreamSlots(3, 3, 2*time.Second, 4*time.Second)
	held := fill(t, slots, 3*time.Second, 40*time.Second, 0)
	start := time.Now()
	release, preempted, no := slots.acquire(context.Background(), "newcomer", &stalledStream{})
	if no != nil {
		t.Fatalf("the newcomer was refused: %d %s", no.status, no.Code)
	}
	defer release()
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("the newcomer waited %s for its slot", took)
	}
	if !preempted {
		t.Error("acquire did not report that it preempted a stream")
	}
	for i, want := range []bool{false, true, false} {
		if held[i].preempted != want {
			t.Errorf("stream %d (stalled %s): preempted = %t, want %t", i, held[i].stall, held[i].preempted, want)
		}
	}
}

func TestAFullPoolOfStreamsBeingReadRefusesANewcomerAfterSlotWait(t *testing.T) {
	const wait = 300 * time.Millisecond
	slots := newStreamSlots(2, 2, 2*time.Second, wait)
	held := fill(t, slots, 1900*time.Millisecond, 0) // neither stalled PreemptAfter yet
	start := time.Now()
	_, _, no := slots.acquire(context.Background(), "newcomer", &stalledStream{})
	took := time.Since(start)
	if no == nil || no.status != http.StatusServiceUnavailable || no.Code != "too_many_streams" {
		t.Fatalf("refusal = %+v, want 503 too_many_streams", no)
	}
	if took < wait || took > wait+200*time.Millisecond {
		t.Errorf("the newcomer was refused after %s, want after SlotWait, %s", took, wait)
	}
	for i, s := range held {
		if s.preempted {
			t.Errorf("stream %d, stalled %s, was preempted", i, s.stall)
		}
	}
}

func TestANewcomerTakesASlotThatFreesWhileItWaits(t *testing.T) {
	slots := newStreamSlots(1, 1, 2*time.Second, 4*time.Second)
	held := fill(t, slots, 0)
	time.AfterFunc(100*time.Millisecond, held[0].release)
	release, preempted, no := slots.acquire(context.Background(), "newcomer", &stalledStream{})
	if no != nil {
		t.Fatalf("the newcomer was refused: %d %s", no.status, no.Code)
	}
	release()
	if preempted || held[0].preempted {
		t.Error("a stream was preempted, though a slot freed by itself")
	}
}

// hangingStream is pre-empted but does not end (a connection whose client reads
// nothing at all ends only with the connection).
type hangingStream struct{ stalledStream }

func (s *hangingStream) preempt() { s.preempted = true }

func TestNoMoreStreamsEndAtOnceThanThePoolHoldsSlots(t *testing.T) {
	const wait = 200 * time.Millisecond
	slots := newStreamSlots(1, 3, 2*time.Second, wait)
	first := &hangingStream{stalledStream{stall: 10 * time.Second}}
	if _, _, no := slots.acquire(context.Background(), "a", first); no != nil {
		t.Fatal(no.Code)
	}
	second := &hangingStream{stalledStream{stall: 10 * time.Second}}
	if _, preempted, no := slots.acquire(context.Background(), "b", second); no != nil || !preempted || !first.preempted {
		t.Fatalf("the second stream: refusal %+v, preempted %t, first preempted %t; want a slot at once, for the first's", no, preempted, first.preempted)
	}
	_, _, no := slots.acquire(context.Background(), "c", &stalledStream{})
	if no == nil || no.status != http.StatusServiceUnavailable {
		t.Fatalf("a third stream while one ends and one is served by a pool of 1: refusal %+v, want 503", no)
	}
	if !second.preempted {
		t.Error("the second stream was not preempted, though the third was refused for want of a slot")
	}
}
