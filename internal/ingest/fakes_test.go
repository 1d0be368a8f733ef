package ingest

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/annotated-data/pipeline/internal/dial"
	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// fakeMsg is a jetstream.Msg that records what the ingester told JetStream of it.
type fakeMsg struct {
	subject string
	data    []byte
	header  nats.Header
	meta    jetstream.MsgMetadata
	metaErr error
	ackErr  error // what Ack answers

	mu                     sync.Mutex
	acks, naks, terms, wip int
	nakDelay               time.Duration
}

var _ jetstream.Msg = (*fakeMsg)(nil)

// newMsg is a message at stream position seq, delivered once.
func newMsg(seq uint64, data string) *fakeMsg {
	return &fakeMsg{
		subject: "annotations.cam-1",
		data:    []byte(data),
		header:  nats.Header{},
		meta: jetstream.MsgMetadata{
			Stream: "ANNOTATIONS", Sequence: jetstream.SequencePair{Stream: seq, Consumer: seq},
			NumDelivered: 1, Timestamp: time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC),
		},
	}
}

func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	if m.metaErr != nil {
		return nil, m.metaErr
	}
	meta := m.meta
	return &meta, nil
}
func (m *fakeMsg) Data() []byte                    { return m.data }
func (m *fakeMsg) Headers() nats.Header            { return m.header }
func (m *fakeMsg) Subject() string                 { return m.subject }
func (m *fakeMsg) Reply() string                   { return "" }
func (m *fakeMsg) DoubleAck(context.Context) error { return m.Ack() }
func (m *fakeMsg) Ack() error                      { m.count(&m.acks); return m.ackErr }
func (m *fakeMsg) Nak() error                      { m.count(&m.naks); return nil }
func (m *fakeMsg) Term() error                     { m.count(&m.terms); return nil }
func (m *fakeMsg) TermWithReason(string) error     { return m.Term() }
func (m *fakeMsg) InProgress() error               { m.count(&m.wip); return nil }
func (m *fakeMsg) NakWithDelay(d time.Duration) error {
	m.mu.Lock()
	m.nakDelay = d
	m.mu.Unlock()
	return m.Nak()
}

func (m *fakeMsg) count(n *int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	*n++
}

// fate is what became of the message: "ack", "nak" or "term", or a description of
// what went wrong when it was settled other than exactly once.
func (m *fakeMsg) fate() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.acks == 1 && m.naks == 0 && m.terms == 0:
		return "ack"
	case m.naks == 1 && m.acks == 0 && m.terms == 0:
		return "nak"
	case m.terms == 1 && m.acks == 0 && m.naks == 0:
		return "term"
	}
	return "settled other than once"
}

func (m *fakeMsg) inProgress() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.wip
}

// fakeIndexer answers bulk requests with its bulk function and records them.
type fakeIndexer struct {
	bulk func(call int, items []pipeline.Item) ([]pipeline.ItemResult, error)

	mu    sync.Mutex
	calls [][]pipeline.Item
}

var _ Indexer = (*fakeIndexer)(nil)

func (f *fakeIndexer) Bulk(ctx context.Context, items []pipeline.Item) ([]pipeline.ItemResult, error) {
	f.mu.Lock()
	call := len(f.calls)
	f.calls = append(f.calls, items)
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return f.bulk(call, items)
}

func (f *fakeIndexer) requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// outcomes is a bulk answer of the same outcome and status for every item.
func outcomes(items []pipeline.Item, o pipeline.Outcome, status int, errType string) []pipeline.ItemResult {
	rs := make([]pipeline.ItemResult, len(items))
	for i := range rs {
		rs[i] = pipeline.ItemResult{Outcome: o, Status: status, Type: errType}
	}
	return rs
}

// fakeJetStream records the streams, consumer and dead letters the ingester asks
// for.
type fakeJetStream struct {
	publishErr error
	consumer   *fakeConsumer // what CreateOrUpdateConsumer returns

	mu        sync.Mutex
	streams   map[string]jetstream.StreamConfig
	consumers []jetstream.ConsumerConfig
	published []*nats.Msg
}

var _ JetStream = (*fakeJetStream)(nil)

func (f *fakeJetStream) Stream(_ context.Context, name string) (jetstream.Stream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.streams[name]; ok {
		return nil, nil
	}
	return nil, jetstream.ErrStreamNotFound
}

func (f *fakeJetStream) CreateStream(_ context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.streams == nil {
		f.streams = map[string]jetstream.StreamConfig{}
	}
	f.streams[cfg.Name] = cfg
	return nil, nil
}

func (f *fakeJetStream) CreateOrUpdateConsumer(_ context.Context, _ string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.consumers = append(f.consumers, cfg)
	if f.consumer == nil {
		return nil, errors.New("fakeJetStream: no consumer to return")
	}
	return f.consumer, nil
}

func (f *fakeJetStream) PublishMsg(_ context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if f.publishErr != nil {
		return nil, f.publishErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.published = append(f.published, m)
	return &jetstream.PubAck{Stream: "ANNOTATIONS_DLQ", Sequence: uint64(len(f.published))}, nil
}

func (f *fakeJetStream) deadLetters() []*nats.Msg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*nats.Msg(nil), f.published...)
}

// fakeConsumer hands out the given batches of messages, one per Fetch, then none.
// The ingester calls only Fetch, FetchNoWait and Info (its consumer interface); the rest of
// jetstream.Consumer, which CreateOrUpdateConsumer must return, fails.
type fakeConsumer struct {
	fetchErrs int // the first fetches fail this many times

	mu      sync.Mutex
	batches [][]jetstream.Msg
	fetches int
}

func (c *fakeConsumer) Fetch(int, ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	return c.next()
}

// FetchNoWait is Fetch: the fake's batches are all there is, waiting.
func (c *fakeConsumer) FetchNoWait(int) (jetstream.MessageBatch, error) { return c.next() }

// next hands out the next batch, after the failures asked for.
func (c *fakeConsumer) next() (jetstream.MessageBatch, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fetches++
	if c.fetches <= c.fetchErrs {
		return nil, errors.New("nats: connection closed")
	}
	b := &fakeBatch{msgs: make(chan jetstream.Msg, 64), err: jetstream.ErrNoMessages}
	if len(c.batches) > 0 {
		for _, m := range c.batches[0] {
			b.msgs <- m
		}
		c.batches, b.err = c.batches[1:], nil
	}
	close(b.msgs)
	return b, nil
}

func (c *fakeConsumer) Info(context.Context) (*jetstream.ConsumerInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pending := 0
	for _, b := range c.batches {
		pending += len(b)
	}
	return &jetstream.ConsumerInfo{NumPending: uint64(pending)}, nil
}

var (
	_ consumer           = (*fakeConsumer)(nil)
	_ jetstream.Consumer = (*fakeConsumer)(nil)
)

// errNotCalled answers the jetstream.Consumer methods the ingester never calls.
var errNotCalled = errors.New("fakeConsumer: the ingester does not call this")

func (c *fakeConsumer) FetchBytes(int, ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	return nil, errNotCalled
}
func (c *fakeConsumer) Consume(jetstream.MessageHandler, ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error) {
	return nil, errNotCalled
}
func (c *fakeConsumer) Messages(...jetstream.PullMessagesOpt) (jetstream.MessagesContext, error) {
	return nil, errNotCalled
}
func (c *fakeConsumer) Next(...jetstream.FetchOpt) (jetstream.Msg, error) { return nil, errNotCalled }
func (c *fakeConsumer) CachedInfo() *jetstream.ConsumerInfo               { return &jetstream.ConsumerInfo{} }

type fakeBatch struct {
	msgs chan jetstream.Msg
	err  error
}

func (b *fakeBatch) Messages() <-chan jetstream.Msg { return b.msgs }
func (b *fakeBatch) Error() error                   { return b.err }

// testIngester is an ingester over fakes, with timings shrunk so that retries
// and keep-alives happen within milliseconds.
func testIngester(t *testing.T, idx Indexer, js *fakeJetStream, cfg Config) (*Ingester, *testenv.Buffer) {
	t.Helper()
	logs := &testenv.Buffer{}
	cfg.AckWait = orDefault(cfg.AckWait, 30*time.Millisecond)
	cfg.ProgressInterval = orDefault(cfg.ProgressInterval, time.Hour)
	cfg.BulkMaxWait = orDefault(cfg.BulkMaxWait, 5*time.Millisecond)
	in := New(js, idx, cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), NewMetrics(prometheus.NewRegistry()))
	in.retry = dial.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}
	return in, logs
}

func orDefault(d, fallback time.Duration) time.Duration {
	if d == 0 {
		return fallback
	}
	return d
}

// batchOf builds one batch from msgs as the fetcher would, failing the test if any
// was dead-lettered on the way.
func batchOf(t *testing.T, in *Ingester, msgs ...*fakeMsg) *batch {
	t.Helper()
	var ms []jetstream.Msg
	for _, m := range msgs {
		ms = append(ms, m)
	}
	in.metrics.hold(len(ms))
	bs := in.batchesOf(context.Background(), ms)
	if len(bs) != 1 || len(bs[0].msgs) != len(msgs) {
		t.Fatalf("batchesOf made %d batches of the %d messages, want one with all", len(bs), len(msgs))
	}
	return bs[0]
}

// frame is a valid message body at seconds past 19:40 on 2023-03-09.
func frame(sec int) string {
	return `{"camera_id":"cam-1","timestamp":"2023-03-09T19:40:` + twoDigits(sec) + `Z","boxes":[]}`
}

func twoDigits(n int) string { return string([]byte{byte('0' + n/10%10), byte('0' + n%10)}) }
