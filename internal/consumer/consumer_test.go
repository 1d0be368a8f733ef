package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/consumer"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// The facts package follow's proof rests on, checked against a real JetStream
// server: the ack floor counts terminated (dead-lettered) messages and deleted
// ones as settled, and never passes a message still in flight.

type fixture struct {
	t    *testing.T
	ctx  context.Context
	js   jetstream.JetStream
	cons jetstream.Consumer
	c    *consumer.Consumer
	msgs map[uint64]jetstream.Msg // delivered, not yet settled, by stream sequence
}

func newFixture(t *testing.T) *fixture {
	js := testenv.JetStream(t, testenv.StartNATS(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ANNOTATIONS", Subjects: []string{"annotations.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "ANNOTATIONS", jetstream.ConsumerConfig{
		Durable: "webserver", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1, AckWait: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := consumer.New(js.Conn(), "ANNOTATIONS", "webserver")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: ctx, js: js, cons: cons, c: c, msgs: map[uint64]jetstream.Msg{}}
}

// publish stores n messages and returns the last sequence.
func (f *fixture) publish(n int) uint64 {
	f.t.Helper()
	var last uint64
	for i := range n {
		ack, err := f.js.Publish(f.ctx, "annotations.cam-01", fmt.Appendf(nil, `{"i":%d}`, i))
		if err != nil {
			f.t.Fatal(err)
		}
		last = ack.Sequence
	}
	return last
}

// fetch takes delivery of n messages without settling them.
func (f *fixture) fetch(n int) {
	f.t.Helper()
	batch, err := f.cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		f.t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			f.t.Fatal(err)
		}
		f.msgs[md.Sequence.Stream] = m
		got++
	}
	if got != n {
		f.t.Fatalf("fetched %d messages, want %d", got, n)
	}
}

func (f *fixture) ack(seqs ...uint64) {
	f.t.Helper()
	for _, s := range seqs {
		if err := f.msgs[s].DoubleAck(f.ctx); err != nil {
			f.t.Fatalf("ack %d: %v", s, err)
		}
		delete(f.msgs, s)
	}
}

func (f *fixture) term(s uint64) {
	f.t.Helper()
	if err := f.msgs[s].TermWithReason("poison"); err != nil {
		f.t.Fatalf("term %d: %v", s, err)
	}
	delete(f.msgs, s)
}

// floorBecomes waits for Settled to report want (acks reach the server
// asynchronously), and fails if it reports anything else after a short while.
func (f *fixture) floorBecomes(want uint64) {
	f.t.Helper()
	var got uint64
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var err error
		if got, err = f.c.Settled(f.ctx); err != nil {
			f.t.Fatal(err)
		}
		if got == want {
			return
		}
	}
	f.t.Fatalf("ack floor %d, want %d", got, want)
}

// floorStays checks the floor is still want a moment after the last settle,
// when a wrong advance would have shown.
func (f *fixture) floorStays(want uint64) {
	f.t.Helper()
	time.Sleep(300 * time.Millisecond)
	f.floorBecomes(want)
}

func TestAckFloorNeverPassesAnUnsettledMessage(t *testing.T) {
	f := newFixture(t)
	f.publish(10)
	f.fetch(10)
	f.ack(1, 2, 3, 4, 6, 7, 8, 9, 10)
	f.floorStays(4)

	f.publish(3) // 11, 12, 13
	f.fetch(3)
	f.ack(13)
	f.floorStays(4)
	f.ack(5)
	f.floorBecomes(10) // 11 and 12 are still in flight, 13 is past them
	f.floorStays(10)
	f.ack(11, 12)
	f.floorBecomes(13)
}

func TestAckFloorAdvancesOverTerminatedMessages(t *testing.T) {
	f := newFixture(t)
	f.publish(10)
	f.fetch(10)
	f.ack(1, 2, 3, 4, 6, 7, 8, 9, 10)
	f.floorStays(4)
	f.term(5) // what the webserver does after dead-lettering a message
	f.floorBecomes(10)
}

func TestAckFloorAdvancesOverDeletedMessages(t *testing.T) {
	f := newFixture(t)
	f.publish(10)
	stream, err := f.js.Stream(f.ctx, "ANNOTATIONS")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.DeleteMsg(f.ctx, 7); err != nil {
		t.Fatal(err)
	}
	f.fetch(9)
	f.ack(1, 2, 3, 4, 5, 6, 8, 9)
	f.floorStays(9) // past the gap at 7; 10 is in flight
	f.ack(10)
	f.floorBecomes(10)

	// A gap deleted while its neighbours are in flight.
	f.publish(3) // 11, 12, 13
	f.fetch(3)
	if err := stream.DeleteMsg(f.ctx, 12); err != nil {
		t.Fatal(err)
	}
	f.ack(11, 13)
	f.floorBecomes(13)
}

func TestSettledSaysWhenTheConsumerIsMissing(t *testing.T) {
	js := testenv.JetStream(t, testenv.StartNATS(t).URL())
	c, err := consumer.New(js.Conn(), "ANNOTATIONS", "webserver")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Settled(context.Background()); !errors.Is(err, consumer.ErrMissing) {
		t.Errorf("Settled without a stream: %v, want ErrMissing", err)
	}
	if _, _, err := c.PublishedBefore(context.Background(), time.Now()); !errors.Is(err, consumer.ErrMissing) {
		t.Errorf("PublishedBefore without a stream: %v, want ErrMissing", err)
	}
}

func TestPublishedBeforeIsFinalOnceAMessageWasStoredAfterTheTime(t *testing.T) {
	f := newFixture(t)
	before := time.Now()
	time.Sleep(20 * time.Millisecond)
	f.publish(3)
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	f.publish(2)
	time.Sleep(20 * time.Millisecond)
	after := time.Now()

	for _, c := range []struct {
		name  string
		t     time.Time
		last  uint64
		final bool
	}{
		{"before the first message", before, 0, true},
		{"between the third and the fourth", mid, 3, true},
		{"after the last: more may still come", after, 5, false},
	} {
		last, final, err := f.c.PublishedBefore(f.ctx, c.t)
		if err != nil {
			t.Fatal(err)
		}
		if last != c.last || final != c.final {
			t.Errorf("%s: PublishedBefore = %d, %v; want %d, %v", c.name, last, final, c.last, c.final)
		}
	}

	// Once a later message is stored, the answer for "after" becomes final.
	time.Sleep(20 * time.Millisecond)
	f.publish(1)
	if last, final, err := f.c.PublishedBefore(f.ctx, after); err != nil || last != 5 || !final {
		t.Errorf("after a later message: PublishedBefore = %d, %v, %v; want 5, true", last, final, err)
	}
}
