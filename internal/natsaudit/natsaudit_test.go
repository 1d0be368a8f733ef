package natsaudit

import (
	"context"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// The audit never reads a message to count them: the stream's first and last
// sequence and its list of deleted ones are enough. This checks that against a
// real stream with a purged head and deleted messages in between.
func TestTheStreamsInfoCountsItsMessagesInAnyWindow(t *testing.T) {
	ctx := context.Background()
	js := testenv.JetStream(t, testenv.StartNATS(t).URL())
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := js.Publish(ctx, "s.a", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSequence(4)); err != nil { // 1-3 gone
		t.Fatal(err)
	}
	for _, seq := range []uint64{7, 8, 15} {
		if err := stream.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	st, err := JetStream{JS: js, Stream: "S", DLQStream: "S_DLQ", Durable: "none"}.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.First != 4 || st.Last != 20 || !slices.Equal(st.Deleted, []uint64{7, 8, 15}) || st.HasDurable {
		t.Fatalf("state = %+v, want 4-20 with 7, 8 and 15 deleted, no durable", st)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// What the audit counts (audit's messagesIn): the span less the deleted.
	if got := int64(st.Last-st.First+1) - int64(len(st.Deleted)); got != int64(info.State.Msgs) {
		t.Errorf("messages in 4-20 less the deleted = %d, the stream holds %d", got, info.State.Msgs)
	}
	ids, err := JetStream{JS: js, Stream: "S"}.DocumentIDs(ctx, []uint64{2, 7, 9})
	if err != nil || len(ids) != 1 || ids[9] != "S-9" {
		t.Errorf("document ids of 2 (purged), 7 (deleted), 9: %v, %v; want only 9 as S-9", ids, err)
	}
}
