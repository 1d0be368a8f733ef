package ingest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// memoryIndex creates each id once and answers a repeat as a duplicate, as
// op_type=create does.
type memoryIndex struct {
	mu  sync.Mutex
	ids []string
}

func (x *memoryIndex) Bulk(_ context.Context, items []pipeline.Item) ([]pipeline.ItemResult, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]pipeline.ItemResult, len(items))
	for i, it := range items {
		if slices.Contains(x.ids, it.ID) {
			out[i] = pipeline.ItemResult{Outcome: pipeline.Duplicate, Status: 409}
			continue
		}
		x.ids = append(x.ids, it.ID)
		out[i] = pipeline.ItemResult{Outcome: pipeline.Created, Status: 201}
	}
	return out, nil
}

// replayWorld is a real stream of six messages: four frames and a poison on
// cam-1, one frame on cam-2, and the live durable consumer, which has taken none.
func replayWorld(t *testing.T) (jetstream.JetStream, Config) {
	t.Helper()
	js := testenv.JetStream(t, testenv.StartNATS(t).URL())
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ANNOTATIONS", Subjects: []string{"annotations.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, "ANNOTATIONS", jetstream.ConsumerConfig{Durable: "webserver", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	for i, m := range []struct{ subject, data string }{
		{"annotations.cam-1", frame(1)}, {"annotations.cam-2", frame(2)}, {"annotations.cam-1", frame(3)},
		{"annotations.cam-1", `{"camera_id":`}, {"annotations.cam-1", frame(5)}, {"annotations.cam-1", frame(6)},
	} {
		if _, err := js.Publish(ctx, m.subject, []byte(m.data)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	return js, Config{BulkMaxWait: 200 * time.Millisecond, BulkMaxDocs: 2}
}

func replay(t *testing.T, js jetstream.JetStream, idx Indexer, cfg Config, w Window) ReplayResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Replay(ctx, js, idx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), []Window{w}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestReplayIndexesAWindowOnceAndAgainOnlyFindsDuplicates(t *testing.T) {
	js, cfg := replayWorld(t)
	idx := &memoryIndex{}
	first := replay(t, js, idx, cfg, Window{FromSeq: 1, Subjects: []string{"annotations.cam-1"}})
	if first.Messages != 5 || first.Indexed != 4 || first.DeadLettered != 1 || first.Duplicates != 0 || first.Unsettled != 0 {
		t.Errorf("first replay: %+v; want 5 messages, 4 indexed, 1 dead-lettered", first)
	}
	if want := []string{"ANNOTATIONS-1", "ANNOTATIONS-3", "ANNOTATIONS-5", "ANNOTATIONS-6"}; !slices.Equal(sorted(idx.ids), want) {
		t.Errorf("indexed %v, want the frames of cam-1 %v", idx.ids, want)
	}
	second := replay(t, js, idx, cfg, Window{FromSeq: 1, Subjects: []string{"annotations.cam-1"}})
	if second.Indexed != 0 || second.Duplicates != 4 || second.DeadLettered != 0 || second.AlreadyDeadLettered != 1 {
		t.Errorf("second replay: %+v; want 4 duplicates and the poison already dead-lettered", second)
	}
	letters, err := DeadLetters(context.Background(), js, "ANNOTATIONS_DLQ", "ANNOTATIONS")
	if err != nil || len(letters) != 1 || letters[4] != 1 {
		t.Errorf("dead letters by original sequence: %v, %v; want one, of 4", letters, err)
	}
}

func TestReplayLeavesTheDurableConsumerAlone(t *testing.T) {
	js, cfg := replayWorld(t)
	replay(t, js, &memoryIndex{}, cfg, Window{FromSeq: 1})
	cons, err := js.Consumer(context.Background(), "ANNOTATIONS", "webserver")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 6 || info.Delivered.Stream != 0 || info.AckFloor.Stream != 0 {
		t.Errorf("durable after a replay: %d pending, delivered up to %d, ack floor %d; want 6, 0, 0",
			info.NumPending, info.Delivered.Stream, info.AckFloor.Stream)
	}
}

func TestReplayBySequenceTakesExactlyTheWindow(t *testing.T) {
	js, cfg := replayWorld(t)
	idx := &memoryIndex{}
	res := replay(t, js, idx, cfg, Window{FromSeq: 2, ToSeq: 3})
	if res.Messages != 2 || !slices.Equal(sorted(idx.ids), []string{"ANNOTATIONS-2", "ANNOTATIONS-3"}) {
		t.Errorf("replayed %d messages, indexed %v; want 2 and 3", res.Messages, idx.ids)
	}
}

func TestReplayOfAWindowPartlyBeyondTheStreamSaysSo(t *testing.T) {
	js, cfg := replayWorld(t)
	stream, err := js.Stream(context.Background(), "ANNOTATIONS")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(context.Background(), jetstream.WithPurgeSequence(4)); err != nil {
		t.Fatal(err)
	}
	res := replay(t, js, &memoryIndex{}, cfg, Window{FromSeq: 1})
	if !res.Trimmed || res.FirstHeld != 4 || res.Messages != 3 {
		t.Errorf("replay of 1-6 after 1-3 were purged: %+v; want trimmed, first held 4, 3 messages", res)
	}
}

// publishFrames publishes frames after a pause, so that times taken around them
// separate them from the messages before and after.
func publishFrames(t *testing.T, js jetstream.JetStream, frames ...int) {
	t.Helper()
	time.Sleep(20 * time.Millisecond)
	for _, i := range frames {
		if _, err := js.Publish(context.Background(), "annotations.cam-1", []byte(frame(i))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
}

func TestReplayByTimeTakesAndCountsOnlyTheWindowsMessages(t *testing.T) {
	js, cfg := replayWorld(t) // 1-6
	since := time.Now()
	publishFrames(t, js, 7, 8)
	until := time.Now()
	time.Sleep(20 * time.Millisecond)
	quietUntil := time.Now() // nothing is published from until to here
	publishFrames(t, js, 9, 10, 11, 12)

	for _, tt := range []struct {
		since, until time.Time
		ids          []string
		progress     string // the final progress line starts so
	}{
		{since, until, []string{"ANNOTATIONS-7", "ANNOTATIONS-8"}, "[==============================] 100%  2/2 messages"},
		{until, quietUntil, nil, "0 messages"},
	} {
		idx := &memoryIndex{}
		var progress bytes.Buffer
		res, err := Replay(context.Background(), js, idx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)),
			[]Window{{Since: tt.since, Until: tt.until}}, &progress)
		lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
		if err != nil || res.Trimmed || res.Messages != int64(len(tt.ids)) || !slices.Equal(sorted(idx.ids), tt.ids) ||
			!strings.HasPrefix(lines[len(lines)-1], tt.progress) {
			t.Errorf("replay from %s to %s: %+v, %v, indexed %v, progress %q; want %v and a last line starting %q",
				tt.since.Format(time.StampMilli), tt.until.Format(time.StampMilli), res, err, idx.ids, progress.String(), tt.ids, tt.progress)
		}
	}
}

func TestReplayOfAWindowBeforeThePurgedStreamExistedIsNotBeyondIt(t *testing.T) {
	js, cfg := replayWorld(t)
	stream, err := js.Stream(context.Background(), "ANNOTATIONS")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(context.Background(), jetstream.WithPurgeSequence(4)); err != nil {
		t.Fatal(err)
	}
	created := stream.CachedInfo().Created
	res := replay(t, js, &memoryIndex{}, cfg, Window{Since: created.Add(-2 * time.Hour), Until: created.Add(-time.Hour)})
	if res.Trimmed || res.Messages != 0 {
		t.Errorf("replay of the two hours before the stream was created: %+v; want nothing replayed and nothing beyond the stream", res)
	}
	// From then on, the purged messages were in the window.
	res = replay(t, js, &memoryIndex{}, cfg, Window{Since: created.Add(-2 * time.Hour)})
	if !res.Trimmed || res.Messages != 3 {
		t.Errorf("replay since two hours before the stream was created: %+v; want the 3 held replayed and the window beyond the stream", res)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
