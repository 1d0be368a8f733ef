package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// Each case sends one batch of three messages through index and states what
// becomes of every message: acked, dead-lettered (terminated) or handed back.
func TestIndexSettlesEveryMessageExactlyOnce(t *testing.T) {
	errDown := errors.New("dial tcp 127.0.0.1:9200: connection refused")
	tests := []struct {
		name       string
		bulk       func(call int, items []pipeline.Item) ([]pipeline.ItemResult, error)
		publishErr error
		cancelled  bool // the shutdown timeout has passed before the batch is done
		want       string
		requests   int // bulk requests made, at least
		dead       int // dead letters published
		setAside   int // documents stored with fields set aside
	}{
		{name: "all created are acked",
			bulk: func(_ int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
				return outcomes(items, pipeline.Created, 201, ""), nil
			},
			want: "ack", requests: 1},
		{name: "a 409 is a duplicate, acked without a second copy",
			bulk: func(_ int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
				return outcomes(items, pipeline.Duplicate, 409, "version_conflict_engine_exception"), nil
			},
			want: "ack", requests: 1},
		{name: "a 429 is retried until it succeeds",
			bulk: func(call int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
				if call < 2 {
					return outcomes(items, pipeline.Retry, 429, "es_rejected_execution_exception"), nil
				}
				return outcomes(items, pipeline.Created, 201, ""), nil
			},
			want: "ack", requests: 3},
		{name: "an unreachable cluster is retried until it answers",
			bulk: func(call int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
				if call < 2 {
					return nil, errDown
				}
				return outcomes(items, pipeline.Created, 201, ""), nil
			},
			want: "ack", requests: 3},
		{name: "401, 403 and 404 keep the batch and retry: the cluster's setup, not the message, is at fault",
			bulk: func(call int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
				if call < 3 {
					status := []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound}[call]
					return outcomes(items, pipeline.Retry, status, "security_exception"), nil
				}
				return outcomes(items, pipeline.Created, 201, ""), nil
			},
			want: "ack", requests: 4},
		{name: "a 400 goes to the dead-letter stream",
			bulk: func(_ int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
				return outcomes(items, pipeline.Rejected, 400, "mapper_parsing_exception"), nil
			},
			want: "term", requests: 1, dead: 3},
		{name: "a document its index cannot map is sent again at once with the named field set aside, and acked",
			bulk: func(call int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
				if call == 0 {
					rs := outcomes(items, pipeline.Unmapped, 400, "document_parsing_exception")
					for i := range rs {
						rs[i].Reason = "[1:15] failed to parse field [camera_id] of type [long] in document with id 'x'"
					}
					return rs, nil
				}
				for _, it := range items {
					if !strings.Contains(string(it.Body), `"@unindexed":{"fields":["camera_id"]`) {
						return nil, fmt.Errorf("resent without camera_id set aside: %s", it.Body)
					}
				}
				return outcomes(items, pipeline.Created, 201, ""), nil
			},
			want: "ack", requests: 2, setAside: 3},
		{name: "a document no index can map, even with every field set aside, goes to the dead-letter stream",
			bulk: func(_ int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
				return outcomes(items, pipeline.Unmapped, 400, "document_parsing_exception"), nil
			},
			// every member (the refusal names none), then nothing is left to set aside
			want: "term", requests: 2, dead: 3},
		{name: "a failed dead-letter publish hands the message back, never terminates it",
			bulk: func(_ int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
				return outcomes(items, pipeline.Rejected, 400, "mapper_parsing_exception"), nil
			},
			publishErr: errors.New("nats: timeout"),
			want:       "nak", requests: 1},
		{name: "when the context ends mid-retry everything left is handed back",
			bulk:      func(int, []pipeline.Item) ([]pipeline.ItemResult, error) { return nil, errDown },
			cancelled: true,
			want:      "nak"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := &fakeIndexer{bulk: tt.bulk}
			js := &fakeJetStream{publishErr: tt.publishErr}
			in, _ := testIngester(t, idx, js, Config{})
			msgs := []*fakeMsg{newMsg(1, frame(1)), newMsg(2, frame(2)), newMsg(3, frame(3))}
			b := batchOf(t, in, msgs...)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancelled {
				time.AfterFunc(20*time.Millisecond, cancel)
			}
			in.index(ctx, b)

			for _, m := range msgs {
				if got := m.fate(); got != tt.want {
					t.Errorf("message %d: %s, want %s", m.meta.Sequence.Stream, got, tt.want)
				}
			}
			if got := idx.requests(); got < tt.requests || tt.requests > 0 && !tt.cancelled && got != tt.requests {
				t.Errorf("%d bulk requests, want %d", got, tt.requests)
			}
			if got := len(js.deadLetters()); got != tt.dead {
				t.Errorf("%d dead letters, want %d", got, tt.dead)
			}
			if got := value(in.metrics.unacked); got != 0 {
				t.Errorf("%d messages still counted as unacked", got)
			}
			if got := value(in.metrics.setAside); got != int64(tt.setAside) {
				t.Errorf("%d documents counted as stored with fields set aside, want %d", got, tt.setAside)
			}
		})
	}
}

func TestDeadLettersKeepThePayloadAndSayWhyAndWhence(t *testing.T) {
	idx := &fakeIndexer{bulk: func(_ int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
		return []pipeline.ItemResult{{Outcome: pipeline.Rejected, Status: 400, Type: "mapper_parsing_exception", Reason: "failed to parse field [boxes]"}}, nil
	}}
	js := &fakeJetStream{}
	in, _ := testIngester(t, idx, js, Config{})
	m := newMsg(42, frame(1))
	m.header.Set(jetstream.MsgIDHeader, "frame-42")
	m.header.Set("Camera-Site", "north")
	in.index(context.Background(), batchOf(t, in, m))

	dl := js.deadLetters()
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	want := map[string]string{
		HeaderReason: "mapper_parsing_exception", HeaderDetail: "failed to parse field [boxes]",
		HeaderOriginalSubject: "annotations.cam-1", HeaderOriginalStream: "ANNOTATIONS", HeaderOriginalSeq: "42",
		HeaderOriginalMsgID: "frame-42", jetstream.MsgIDHeader: "dlq-ANNOTATIONS-42", "Camera-Site": "north",
	}
	for k, v := range want {
		if got := dl[0].Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if dl[0].Subject != "dlq.annotations.cam-1" || string(dl[0].Data) != frame(1) {
		t.Errorf("dead letter on %s with %q, want dlq.annotations.cam-1 with the original payload", dl[0].Subject, dl[0].Data)
	}
	if got := value(in.metrics.deadLettered); got != 1 {
		t.Errorf("dead-lettered counter = %d, want 1", got)
	}
}

// Messages that can never be indexed go to the dead-letter stream before any bulk
// request; the rest of their batch is indexed.
func TestMessagesThatCanNeverBeIndexedAreDeadLetteredBeforeTheBulk(t *testing.T) {
	crashLooping := newMsg(2, frame(2))
	crashLooping.meta.NumDelivered = 6
	broken := newMsg(5, frame(5))
	broken.metaErr = errors.New("message is not from JetStream")
	msgs := []*fakeMsg{
		newMsg(1, frame(1)),
		crashLooping,
		newMsg(3, `{"timestamp":"2023-03-09T19:40:03Z","blob":"`+strings.Repeat("x", 200)+`"}`),
		newMsg(4, `{"camera_id":`),
		broken,
	}
	wantReason := map[uint64]pipeline.Reason{2: pipeline.ReasonMaxDeliveries, 3: pipeline.ReasonTooLarge, 4: pipeline.ReasonInvalidJSON, 5: pipeline.ReasonInvalidMessage}

	idx := &fakeIndexer{bulk: func(_ int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
		return outcomes(items, pipeline.Created, 201, ""), nil
	}}
	js := &fakeJetStream{}
	in, _ := testIngester(t, idx, js, Config{MaxDeliver: 5, MaxMessageBytes: 150})
	var ms []jetstream.Msg
	for _, m := range msgs {
		ms = append(ms, m)
	}
	in.metrics.hold(len(ms))
	for _, b := range in.batchesOf(context.Background(), ms) {
		in.index(context.Background(), b)
	}

	if idx.requests() != 1 || len(idx.calls[0]) != 1 || idx.calls[0][0].ID != "ANNOTATIONS-1" {
		t.Fatalf("bulk requests %v, want one with only message 1's document", idx.calls)
	}
	got := map[uint64]pipeline.Reason{}
	for _, dl := range js.deadLetters() {
		seq := uint64(0)
		for _, m := range msgs {
			if string(m.data) == string(dl.Data) {
				seq = m.meta.Sequence.Stream
			}
		}
		got[seq] = pipeline.Reason(dl.Header.Get(HeaderReason))
	}
	for seq, reason := range wantReason {
		if got[seq] != reason {
			t.Errorf("message %d dead-lettered as %q, want %q", seq, got[seq], reason)
		}
	}
	if msgs[0].fate() != "ack" {
		t.Errorf("message 1: %s, want ack", msgs[0].fate())
	}
	for _, m := range msgs[1:] {
		if m.fate() != "term" {
			t.Errorf("message %d: %s, want term", m.meta.Sequence.Stream, m.fate())
		}
	}
}

func TestBatchesAreSplitAtTheByteLimit(t *testing.T) {
	in, _ := testIngester(t, &fakeIndexer{}, &fakeJetStream{}, Config{BulkMaxBytes: 300})
	var ms []jetstream.Msg
	for i := range 5 {
		ms = append(ms, newMsg(uint64(i+1), frame(i)))
	}
	bs := in.batchesOf(context.Background(), ms)
	total := 0
	for _, b := range bs {
		total += len(b.items)
		if b.bytes > 300 && len(b.items) > 1 {
			t.Errorf("a batch of %d documents holds %d bytes, more than 300", len(b.items), b.bytes)
		}
	}
	if len(bs) < 2 || total != 5 {
		t.Errorf("%d batches with %d documents, want several holding all 5", len(bs), total)
	}
}

func TestMessagesAreKeptInProgressDuringALongBulk(t *testing.T) {
	idx := &fakeIndexer{bulk: func(_ int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
		time.Sleep(100 * time.Millisecond) // ten keep-alive periods at AckWait 30ms
		return outcomes(items, pipeline.Created, 201, ""), nil
	}}
	in, _ := testIngester(t, idx, &fakeJetStream{}, Config{AckWait: 30 * time.Millisecond})
	m := newMsg(1, frame(1))
	in.index(context.Background(), batchOf(t, in, m))
	if m.inProgress() < 3 {
		t.Errorf("InProgress sent %d times during a bulk of 10 keep-alive periods, want several", m.inProgress())
	}
	if m.fate() != "ack" {
		t.Errorf("message: %s, want ack", m.fate())
	}
}

func TestAnOutageIsLoggedOnceWhenItBeginsAndOnceWhenItEnds(t *testing.T) {
	idx := &fakeIndexer{bulk: func(call int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
		if call < 4 {
			return nil, errors.New("connection refused")
		}
		return outcomes(items, pipeline.Created, 201, ""), nil
	}}
	in, logs := testIngester(t, idx, &fakeJetStream{}, Config{})
	seenDown := make(chan error, 1)
	idx2 := idx.bulk
	idx.bulk = func(call int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
		if call == 2 {
			seenDown <- in.ElasticsearchErr()
		}
		return idx2(call, items)
	}
	in.index(context.Background(), batchOf(t, in, newMsg(1, frame(1))))

	if err := <-seenDown; err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("ElasticsearchErr during the outage = %v, want the cause", err)
	}
	if err := in.ElasticsearchErr(); err != nil {
		t.Errorf("ElasticsearchErr after recovery = %v, want nil", err)
	}
	out := logs.String()
	if strings.Count(out, "elasticsearch unreachable") != 1 || strings.Count(out, "elasticsearch reachable again") != 1 {
		t.Errorf("want one line at each edge of the outage, got:\n%s", out)
	}
	if got := value(in.metrics.retried); got != 4 {
		t.Errorf("retried counter = %d, want 4", got)
	}
}

func TestItemsThatKeepFailingAreReportedOnceAfterSeveralAttempts(t *testing.T) {
	idx := &fakeIndexer{bulk: func(call int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
		if call <= persistentAfter+2 {
			return outcomes(items, pipeline.Retry, http.StatusForbidden, "security_exception"), nil
		}
		return outcomes(items, pipeline.Created, 201, ""), nil
	}}
	in, logs := testIngester(t, idx, &fakeJetStream{}, Config{})
	m := newMsg(1, frame(1))
	in.index(context.Background(), batchOf(t, in, m))
	if n := strings.Count(logs.String(), "documents keep failing"); n != 1 {
		t.Errorf("%d warnings about persistent failures, want 1:\n%s", n, logs)
	}
	if m.fate() != "ack" {
		t.Errorf("message: %s, want ack once the cluster lets it in", m.fate())
	}
}

func TestFailuresToSettleAreLoggedOncePerStateChangeAndCounted(t *testing.T) {
	idx := &fakeIndexer{bulk: func(_ int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
		return outcomes(items, pipeline.Created, 201, ""), nil
	}}
	in, logs := testIngester(t, idx, &fakeJetStream{}, Config{})
	var failing []*fakeMsg
	for i := range 3 {
		m := newMsg(uint64(i+1), frame(i))
		m.ackErr = errors.New("nats: connection closed")
		failing = append(failing, m)
	}
	in.index(context.Background(), batchOf(t, in, failing...))
	in.index(context.Background(), batchOf(t, in, newMsg(4, frame(4))))

	out := logs.String()
	if strings.Count(out, "telling nats of a settled message failed") != 1 || strings.Count(out, "works again") != 1 {
		t.Errorf("want one line when acks start failing and one when they work again, got:\n%s", out)
	}
	if got := value(in.metrics.settleFailures); got != 3 {
		t.Errorf("settle failures counted: %d, want 3", got)
	}
	if got := value(in.metrics.unacked); got != 0 {
		t.Errorf("unacked = %d after every message was settled, want 0", got)
	}
}

// Run sets up what is missing, consumes until stopped, and survives a failing
// fetch: the whole loop, against fakes.
func TestRunCreatesStreamsAndConsumerThenIngestsUntilStopped(t *testing.T) {
	indexed := make(chan []pipeline.Item, 4)
	idx := &fakeIndexer{bulk: func(_ int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
		indexed <- items
		return outcomes(items, pipeline.Created, 201, ""), nil
	}}
	msgs := []*fakeMsg{newMsg(1, frame(1)), newMsg(2, frame(2)), newMsg(3, frame(3))}
	cons := &fakeConsumer{fetchErrs: 2, batches: [][]jetstream.Msg{{msgs[0], msgs[1]}, {msgs[2]}}}
	js := &fakeJetStream{consumer: cons}
	in, logs := testIngester(t, idx, js, Config{Stream: "CAMS", Subjects: []string{"cams.>"}, DLQStream: "CAMS_DLQ", Durable: "ingest",
		BulkMaxDocs: 2, BulkWorkers: 1, ProgressInterval: 5 * time.Millisecond})

	if err := in.ConsumingErr(); err == nil {
		t.Error("ConsumingErr before Run = nil: a webserver must not be ready before its streams and consumer are in place")
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	got := 0
	for got < 3 {
		select {
		case items := <-indexed:
			got += len(items)
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of 3 documents indexed", got)
		}
	}
	if err := in.ConsumingErr(); err != nil {
		t.Errorf("ConsumingErr while consuming = %v, want nil", err)
	}
	// A progress line follows the work and counts it.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), `"indexed":3,`); {
		if time.Now().After(deadline) {
			t.Fatalf("no progress line counting the 3 documents indexed:\n%s", logs)
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}

	if _, ok := js.streams["CAMS"]; !ok || js.streams["CAMS"].Subjects[0] != "cams.>" {
		t.Errorf("streams created: %v, want CAMS on cams.>", js.streams)
	}
	if dlq, ok := js.streams["CAMS_DLQ"]; !ok || dlq.Subjects[0] != "cams_dlq.>" {
		t.Errorf("streams created: %v, want CAMS_DLQ on cams_dlq.> (its name in lower case)", js.streams)
	}
	if len(js.consumers) != 1 || js.consumers[0].Durable != "ingest" || js.consumers[0].AckPolicy != jetstream.AckExplicitPolicy ||
		js.consumers[0].MaxDeliver != -1 || js.consumers[0].MaxAckPending != 2*(1+2) {
		t.Errorf("consumer %+v, want durable ingest, explicit acks, unlimited delivery, MaxAckPending 6", js.consumers)
	}
	for _, m := range msgs {
		if m.fate() != "ack" {
			t.Errorf("message %d: %s, want ack", m.meta.Sequence.Stream, m.fate())
		}
	}
	out := logs.String()
	if strings.Count(out, "fetching from nats failed") != 1 || strings.Count(out, "fetching from nats again") != 1 {
		t.Errorf("want the failing fetches logged once and the recovery once, got:\n%s", out)
	}
}

// A batch that waits for a busy worker is kept in progress, or a slow
// Elasticsearch would make NATS redeliver it until MaxDeliver dead-letters it.
func TestMessagesWaitingForABusyWorkerAreKeptInProgress(t *testing.T) {
	release := make(chan struct{})
	idx := &fakeIndexer{bulk: func(_ int, items []pipeline.Item) ([]pipeline.ItemResult, error) {
		<-release
		return outcomes(items, pipeline.Created, 201, ""), nil
	}}
	in, _ := testIngester(t, idx, &fakeJetStream{}, Config{AckWait: 30 * time.Millisecond, BulkWorkers: 1})
	first, waiting := newMsg(1, frame(1)), newMsg(2, frame(2))
	batches := make(chan *batch) // one worker, busy with the first batch
	go func() {
		b := <-batches
		in.index(context.Background(), b)
	}()
	in.handOver(in.batchesOf(context.Background(), []jetstream.Msg{first}), batches)

	handed := make(chan struct{})
	go func() {
		in.handOver(in.batchesOf(context.Background(), []jetstream.Msg{waiting}), batches)
		close(handed)
	}()
	time.Sleep(100 * time.Millisecond) // ten keep-alive periods
	if waiting.inProgress() < 3 {
		t.Errorf("InProgress sent %d times while the batch waited ten keep-alive periods for a worker, want several", waiting.inProgress())
	}
	go func() { in.index(context.Background(), <-batches) }()
	close(release)
	<-handed
}

func TestRunBindsExistingStreamsAsTheyAre(t *testing.T) {
	cons := &fakeConsumer{}
	js := &fakeJetStream{consumer: cons, streams: map[string]jetstream.StreamConfig{"ANNOTATIONS": {}, "ANNOTATIONS_DLQ": {}}}
	in, logs := testIngester(t, &fakeIndexer{}, js, Config{})
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer stop()
	if err := in.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "created stream") {
		t.Errorf("an existing stream was created again:\n%s", logs)
	}
}
