package publish

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

func jetStream(t *testing.T, withStream bool) jetstream.JetStream {
	ns := testenv.StartNATS(t)
	js := testenv.JetStream(t, ns.URL(), jetstream.WithPublishAsyncMaxPending(64))
	if withStream {
		if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "ANNOTATIONS", Subjects: []string{"annotations.>"}}); err != nil {
			t.Fatal(err)
		}
	}
	return js
}

func TestRepublishingTheSameFramesStoresThemOnce(t *testing.T) {
	js := jetStream(t, true)
	start := time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC)
	acks := 0
	for round, want := range []struct{ stored, dups int }{{250, 0}, {0, 250}} {
		gen := sample.Generator{Start: start, Interval: time.Second, Cameras: 3}
		stored, dups, err := Run(context.Background(), js, Frames(&gen, "annotations", 250), Options{Window: 64}, func() { acks++ })
		if err != nil || stored != want.stored || dups != want.dups {
			t.Fatalf("round %d: stored %d, duplicates %d, err %v; want %d and %d", round+1, stored, dups, err, want.stored, want.dups)
		}
	}
	if acks != 500 {
		t.Errorf("progress called %d times, want once per acknowledged message (500)", acks)
	}
	info, _ := js.Stream(context.Background(), "ANNOTATIONS")
	if n := info.CachedInfo().State.Msgs; n != 250 {
		t.Errorf("stream holds %d messages, want 250", n)
	}
}

func TestFramesOfAnotherStartAreNewFramesAndStored(t *testing.T) {
	js := jetStream(t, true)
	for round, want := range []struct {
		start        time.Time
		stored, dups int
	}{
		{time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC), 120, 0},
		{time.Date(2023, 3, 10, 8, 0, 0, 0, time.UTC), 120, 0}, // numbered alike, later
		{time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC), 0, 120},
	} {
		gen := sample.Generator{Start: want.start, Interval: time.Second, Cameras: 3}
		stored, dups, err := Run(context.Background(), js, Frames(&gen, "annotations", 120), Options{Window: 64}, func() {})
		if err != nil || stored != want.stored || dups != want.dups {
			t.Errorf("round %d, from %s: stored %d, duplicates %d, err %v; want %d and %d", round+1, want.start, stored, dups, err, want.stored, want.dups)
		}
	}
}

func TestReplayTakesIdsFromAFieldOrTheLinesHash(t *testing.T) {
	js := jetStream(t, true)
	file := `{"id":"a","v":1}
{"id":"b","v":2}

{"id":"a","v":3}
`
	stored, dups, err := Run(context.Background(), js, NDJSON(strings.NewReader(file), "annotations.replay", "id"), Options{Window: 8}, func() {})
	if err != nil || stored != 2 || dups != 1 {
		t.Errorf("by field: stored %d, duplicates %d, err %v; want 2 stored, 1 duplicate (the second \"a\")", stored, dups, err)
	}
	// Without a field, identical lines are duplicates, different ones are not.
	file = "{\"v\":1}\n{\"v\":1}\n{\"v\":2}\n"
	stored, dups, err = Run(context.Background(), js, NDJSON(strings.NewReader(file), "annotations.replay", ""), Options{Window: 8}, func() {})
	if err != nil || stored != 2 || dups != 1 {
		t.Errorf("by hash: stored %d, duplicates %d, err %v; want 2 stored, 1 duplicate", stored, dups, err)
	}
}

func TestReplayNamesTheLineWithoutAnId(t *testing.T) {
	js := jetStream(t, true)
	_, _, err := Run(context.Background(), js, NDJSON(strings.NewReader("{\"id\":\"a\"}\n{\"x\":1}\n"), "annotations.replay", "id"), Options{Window: 8}, func() {})
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), `"id"`) {
		t.Errorf("err = %v, want it to name line 2 and the field", err)
	}
}

func TestPublishingWithoutAStreamFailsInsteadOfHanging(t *testing.T) {
	js := jetStream(t, false)
	gen := sample.Generator{Start: time.Now(), Interval: time.Second, Cameras: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _, err := Run(ctx, js, Frames(&gen, "annotations", 1000), Options{Window: 16}, func() {})
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a publish failure", err)
	}
	if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("err = %v, want it to say no stream answered", err)
	}
}

// The client refuses a publish beyond its limit of pending ones once acks are slow
// to come back (nats: stalled with too many outstanding async published messages).
// Run, told a window of exactly that limit, must never go over it.
func TestAWindowAsLargeAsTheClientsLimitNeverOverrunsIt(t *testing.T) {
	js := &slowAcks{limit: 3, delay: 5 * time.Millisecond}
	gen := sample.Generator{Start: time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC), Interval: time.Second, Cameras: 2}
	stored, _, err := Run(context.Background(), js, Frames(&gen, "annotations", 60), Options{Window: 3}, func() {})
	if err != nil || stored != 60 {
		t.Fatalf("stored %d, err %v; want all 60 and no error", stored, err)
	}
}

// slowAcks is a JetStream client whose acknowledgements arrive after delay, and
// which, like nats.go's, refuses a publish while limit are pending.
type slowAcks struct {
	jetstream.JetStream
	limit int
	delay time.Duration

	mu      sync.Mutex
	pending int
}

func (s *slowAcks) PublishAsync(subject string, data []byte, _ ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending >= s.limit {
		return nil, jetstream.ErrTooManyStalledMsgs
	}
	s.pending++
	f := &ackFuture{ok: make(chan *jetstream.PubAck, 1), msg: &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}}
	time.AfterFunc(s.delay, func() {
		s.mu.Lock()
		s.pending--
		s.mu.Unlock()
		f.ok <- &jetstream.PubAck{Stream: "ANNOTATIONS"}
	})
	return f, nil
}

type ackFuture struct {
	ok  chan *jetstream.PubAck
	msg *nats.Msg
}

func (f *ackFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *ackFuture) Err() <-chan error            { return nil }
func (f *ackFuture) Msg() *nats.Msg               { return f.msg }
