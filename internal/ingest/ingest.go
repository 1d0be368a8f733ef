// Package ingest moves messages from a JetStream stream into Elasticsearch.
//
// One goroutine fetches messages and groups them into bulk batches; Config.BulkWorkers
// goroutines send the batches to the store. A message is acknowledged only once the
// store holds its document (or already held it); a message that can never be
// indexed goes to the dead-letter stream with its reason; anything else is retried,
// with the message kept in progress, until it succeeds. When every worker is busy
// the fetcher waits, so the messages held at once are bounded by the workers and the
// batch size (and by the consumer's MaxAckPending across replicas), however large
// the backlog.
//
// Every message ends in settle (settle.go): acked, terminated after its dead letter
// was stored, or handed back for redelivery. Nothing else touches a message's fate.
package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/dial"
	"github.com/annotated-data/pipeline/internal/document"
	"github.com/annotated-data/pipeline/internal/pipeline"
)

// Config is what the ingester consumes and how it batches. The zero value of a
// field takes the default beside it.
type Config struct {
	Stream    string   // the stream to consume, created if missing (default ANNOTATIONS)
	Subjects  []string // the stream's subjects when it is created (default annotations.>)
	Durable   string   // durable consumer; replicas with the same name share the work (default webserver)
	DLQStream string   // the dead-letter stream, created if missing (default DeadLetterStream(Stream))
	// DLQSubjectPrefix is put before a dead-lettered message's subject; the
	// dead-letter stream takes the subjects <prefix>.> (default
	// DeadLetterSubjectPrefix(DLQStream)).
	DLQSubjectPrefix string

	// Applied only when the ingester creates the streams; existing ones are bound
	// as they are.
	StreamMaxAge    time.Duration // 0: keep messages forever
	StreamMaxBytes  int64         // 0 or -1: no limit
	StreamReplicas  int           // default 1
	DuplicateWindow time.Duration // Nats-Msg-Id deduplication on publish (default 2m)

	MaxAckPending int // default BulkMaxDocs × (BulkWorkers + 2)
	// AckWait is how long NATS waits before it redelivers a message (default
	// 4s). The ingester keeps what it works on in progress every third of it,
	// so a short one costs only those keep-alives, while a killed webserver's
	// messages come back, and the ack floor that followers wait on moves
	// again, that much later.
	AckWait time.Duration
	// MaxDeliver is how often a message may be delivered before it is
	// dead-lettered as a crash loop (default 5).
	MaxDeliver      int
	MaxMessageBytes int // larger messages are dead-lettered (default 1 MiB)

	// How a message's event time is found (see document.Options).
	TimestampField    string // default timestamp
	TimestampRequired bool
	DefaultZone       *time.Location // default UTC
	// The accepted window of event times around the publish time; one outside it
	// is treated as unreadable (0: no bound).
	TimestampMaxPast, TimestampMaxFuture time.Duration

	BulkMaxDocs  int           // documents per bulk request (default 5000)
	BulkMaxBytes int           // bytes per bulk request (default 5 MiB)
	BulkMaxWait  time.Duration // longest one pull waits for a first message when none is waiting (default 1s)
	BulkWorkers  int           // bulk requests in flight (default 2)
	BulkTimeout  time.Duration // a slower bulk request is abandoned and retried (default 60s)

	ProgressInterval time.Duration // a progress line while there is work (default 10s)
	ShutdownTimeout  time.Duration // for bulks in flight after a stop (default 30s)

	// Notify, if set, is called after each batch the durable consumer settled
	// (never during a replay): the webserver announces it on NATS, so that
	// followers read the moved ack floor at once instead of at their next poll.
	Notify func()
}

// DeadLetterStream is the default dead-letter stream of stream: LIDAR_DLQ for
// LIDAR. Naming its stream is then enough for a second pipeline to keep its dead
// letters apart.
func DeadLetterStream(stream string) string { return stream + "_DLQ" }

// DeadLetterSubjectPrefix is the default subject prefix of the dead-letter stream
// dlqStream: its name in lower case (lidar_dlq), a subject token no other
// pipeline's dead letters share. The first pipeline's keeps the dlq it has
// always had, so that existing deployments find their dead letters where they
// were.
func DeadLetterSubjectPrefix(dlqStream string) string {
	if dlqStream == "ANNOTATIONS_DLQ" {
		return "dlq"
	}
	return strings.ToLower(dlqStream)
}

func (c Config) withDefaults() Config {
	c.Stream = cmp.Or(c.Stream, "ANNOTATIONS")
	if len(c.Subjects) == 0 {
		c.Subjects = []string{"annotations.>"}
	}
	c.Durable = cmp.Or(c.Durable, "webserver")
	c.DLQStream = cmp.Or(c.DLQStream, DeadLetterStream(c.Stream))
	c.DLQSubjectPrefix = cmp.Or(c.DLQSubjectPrefix, DeadLetterSubjectPrefix(c.DLQStream))
	if c.StreamMaxBytes == 0 {
		c.StreamMaxBytes = -1
	}
	c.StreamReplicas = cmp.Or(c.StreamReplicas, 1)
	c.DuplicateWindow = cmp.Or(c.DuplicateWindow, 2*time.Minute)
	c.AckWait = cmp.Or(c.AckWait, 4*time.Second)
	c.MaxDeliver = cmp.Or(c.MaxDeliver, 5)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, 1<<20)
	c.TimestampField = cmp.Or(c.TimestampField, "timestamp")
	if c.DefaultZone == nil {
		c.DefaultZone = time.UTC
	}
	c.BulkMaxDocs = cmp.Or(c.BulkMaxDocs, 5000)
	c.BulkMaxBytes = cmp.Or(c.BulkMaxBytes, 5<<20)
	c.BulkMaxWait = cmp.Or(c.BulkMaxWait, time.Second)
	c.BulkWorkers = cmp.Or(c.BulkWorkers, 2)
	c.BulkTimeout = cmp.Or(c.BulkTimeout, time.Minute)
	c.MaxAckPending = cmp.Or(c.MaxAckPending, DefaultMaxAckPending(c.BulkMaxDocs, c.BulkWorkers))
	c.ProgressInterval = cmp.Or(c.ProgressInterval, 10*time.Second)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, 30*time.Second)
	return c
}

// DefaultMaxAckPending is enough for every worker's batch, the batch being filled
// and the next fetch: the consumer never starves the workers, and never hands out
// more.
func DefaultMaxAckPending(bulkMaxDocs, bulkWorkers int) int { return bulkMaxDocs * (bulkWorkers + 2) }

// Indexer is what the ingester needs of the store.
type Indexer interface {
	// Bulk creates the items and reports each one's outcome, in order; an error
	// means the request as a whole failed and no outcome is known.
	Bulk(ctx context.Context, items []pipeline.Item) ([]pipeline.ItemResult, error)
}

// JetStream is what the ingester asks of JetStream: to find or create its
// streams and its durable consumer, and to publish dead letters.
// jetstream.JetStream has it; the tests' fake has nothing more.
type JetStream interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
	CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error)
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

var _ JetStream = jetstream.JetStream(nil)

// consumer is what the ingester asks of a consumer, the durable or a replay's
// ordered one: batches of messages, and how many are still pending.
type consumer interface {
	Fetch(batch int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error)
	FetchNoWait(batch int) (jetstream.MessageBatch, error)
	Info(ctx context.Context) (*jetstream.ConsumerInfo, error)
}

// Ingester consumes one stream through one durable consumer.
type Ingester struct {
	js      JetStream
	store   Indexer
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	es      *esState
	// settler settles what the ingester fetched: with NATS for the durable
	// consumer, by counting for a replay (replay.go).
	settler settler
	// fallbacks counts and logs messages stored under their publish time.
	fallbacks *fallbacks
	// asides sets aside what a document's index cannot map, and counts it.
	asides *asides
	// retry spaces the attempts of a failing bulk request or fetch.
	retry dial.Backoff
	// consuming is set once the streams and the consumer are in place.
	consuming atomic.Bool
}

// New returns an ingester; Run does the work.
func New(js JetStream, st Indexer, cfg Config, log *slog.Logger, m *Metrics) *Ingester {
	cfg = cfg.withDefaults()
	return &Ingester{
		js: js, store: st, cfg: cfg, log: log, metrics: m,
		es:        &esState{log: log, metrics: m},
		settler:   &durable{ackWait: cfg.AckWait, failures: &settleFailures{log: log, metrics: m}, notify: cfg.Notify},
		fallbacks: &fallbacks{log: log, metrics: m, field: cfg.TimestampField, said: sampled{every: sampledLogInterval}},
		asides:    &asides{log: log, metrics: m, said: sampled{every: sampledLogInterval}},
		retry:     dial.Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second},
	}
}

// ElasticsearchErr is non-nil while bulk requests cannot reach Elasticsearch.
func (in *Ingester) ElasticsearchErr() error { return in.es.err() }

// errSettingUp is the readiness of an ingester that has not yet found or created
// its streams and consumer.
var errSettingUp = errors.New("setting up the streams and the consumer")

// ConsumingErr is non-nil until Run has the streams and the consumer in place
// and consumes: until then the webserver may still fail its set-up (a stream
// whose subjects another pipeline takes, a NATS cluster without a leader), so it
// is not ready.
func (in *Ingester) ConsumingErr() error {
	if !in.consuming.Load() {
		return errSettingUp
	}
	return nil
}

// Run creates the streams and the consumer if they are missing, then ingests until
// ctx is cancelled. It then stops fetching, lets the batches in hand finish for up to
// Config.ShutdownTimeout, and returns; whatever was not acked by then is handed back
// for redelivery.
func (in *Ingester) Run(ctx context.Context) error {
	cons, err := in.setUp(ctx)
	if err != nil {
		return err
	}
	in.consuming.Store(true)
	in.log.Info("consuming", "stream", in.cfg.Stream, "durable", in.cfg.Durable,
		"bulk_workers", in.cfg.BulkWorkers, "bulk_max_docs", in.cfg.BulkMaxDocs, "max_ack_pending", in.cfg.MaxAckPending)
	in.consume(ctx, cons)
	return nil
}

// setUp creates what is missing: the stream, the dead-letter stream, the durable.
func (in *Ingester) setUp(ctx context.Context) (consumer, error) {
	if err := in.ensureStream(ctx, jetstream.StreamConfig{
		Name:       in.cfg.Stream,
		Subjects:   in.cfg.Subjects,
		Storage:    jetstream.FileStorage,
		MaxAge:     in.cfg.StreamMaxAge,
		MaxBytes:   in.cfg.StreamMaxBytes,
		Replicas:   in.cfg.StreamReplicas,
		Duplicates: in.cfg.DuplicateWindow,
	}); err != nil {
		return nil, err
	}
	if err := in.ensureDeadLetterStream(ctx); err != nil {
		return nil, err
	}
	cons, err := in.js.CreateOrUpdateConsumer(ctx, in.cfg.Stream, jetstream.ConsumerConfig{
		Durable:       in.cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       in.cfg.AckWait,
		MaxAckPending: in.cfg.MaxAckPending,
		// Redelivery is unlimited on the server: a message that keeps coming back is
		// moved to the dead-letter stream here (Config.MaxDeliver), never dropped.
		MaxDeliver: -1,
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on stream %s: %w", in.cfg.Durable, in.cfg.Stream, err)
	}
	return cons, nil
}

func (in *Ingester) ensureDeadLetterStream(ctx context.Context) error {
	if err := in.ensureStream(ctx, jetstream.StreamConfig{
		Name:     in.cfg.DLQStream,
		Subjects: []string{in.cfg.DLQSubjectPrefix + ".>"},
		Storage:  jetstream.FileStorage,
		Replicas: in.cfg.StreamReplicas,
	}); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeStreamSubjectOverlap {
			// Another pipeline on this server dead-letters under the same prefix.
			return fmt.Errorf("%w: %w", ErrDeadLetterSubjectsTaken, err)
		}
		return err
	}
	return nil
}

func (in *Ingester) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) error {
	_, err := in.js.Stream(ctx, cfg.Name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("look up stream %s: %w", cfg.Name, err)
	}
	if _, err = in.js.CreateStream(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %s for subjects %v: %w", cfg.Name, cfg.Subjects, err)
	}
	in.log.Info("created stream", "stream", cfg.Name, "subjects", cfg.Subjects)
	return nil
}

// consume runs the fetcher and the bulk workers until ctx ends, then lets the
// workers finish what they hold for up to Config.ShutdownTimeout.
func (in *Ingester) consume(ctx context.Context, cons consumer) {
	// Work in hand outlives the stop signal: cancelling a bulk request that is
	// about to succeed would only cause redeliveries.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopAfter := context.AfterFunc(ctx, func() { time.AfterFunc(in.cfg.ShutdownTimeout, cancelWork) })
	defer stopAfter()

	var wg sync.WaitGroup
	wg.Go(func() { in.reportProgress(ctx, cons) })
	in.withWorkers(work, func(batches chan<- *batch) { in.fetchLoop(ctx, work, cons, batches) })
	wg.Wait()
}

// withWorkers runs Config.BulkWorkers goroutines that index every batch feed sends
// them, and returns once feed has returned and they have indexed the last one.
// Live ingestion and replay share it, so both index alike.
func (in *Ingester) withWorkers(work context.Context, feed func(batches chan<- *batch)) {
	batches := make(chan *batch)
	var wg sync.WaitGroup
	for range in.cfg.BulkWorkers {
		wg.Go(func() {
			for b := range batches {
				in.index(work, b)
				in.settler.batchSettled()
			}
		})
	}
	feed(batches)
	close(batches)
	wg.Wait()
}

// fetchLoop fetches until ctx ends, handing batches to the workers; sending blocks
// while every worker is busy, which is what pauses fetching when Elasticsearch is
// slow or down.
func (in *Ingester) fetchLoop(ctx, work context.Context, cons consumer, batches chan<- *batch) {
	failures := 0
	for ctx.Err() == nil {
		msgs, err := in.fetch(cons)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if failures == 0 {
				in.log.Warn("fetching from nats failed; retrying", "err", err)
			}
			dial.Sleep(ctx, in.retry.Delay(failures))
			failures++
			continue
		}
		if failures > 0 {
			in.log.Info("fetching from nats again", "after_failures", failures)
			failures = 0
		}
		in.handOver(in.batchesOf(work, msgs), batches)
	}
}

// handOver gives bs to the workers. While every worker is busy a batch waits here
// as long as a bulk takes: its messages are kept in progress meanwhile, as during
// their own bulk, or a slow Elasticsearch would make NATS redeliver them, and
// each redelivery counts towards MaxDeliver, which dead-letters a valid message
// as a crash loop.
func (in *Ingester) handOver(bs []*batch, batches chan<- *batch) {
	var msgs []jetstream.Msg
	for _, b := range bs {
		msgs = append(msgs, b.msgs...)
	}
	stop := in.settler.keepInProgress(msgs)
	defer stop()
	for _, b := range bs {
		batches <- b
	}
}

// fetch pulls up to one batch of messages: whatever the consumer holds, at once
// (a whole batch at backlog), or, when it holds nothing, the first message to
// arrive within Config.BulkMaxWait and whatever came with it. A partial batch
// never waits for more: with no backlog a message is indexed as soon as it
// arrives, which is what a follower sees, and under load batches grow by
// themselves, since nothing is fetched while every worker is busy.
//
// nats.go recommends Consume or Messages for continuous work, which keep pull
// requests open ahead of the consumer. Fetching in a loop is deliberate here: a
// batch is exactly what one bulk request can take, nothing is pulled while every
// worker is busy (the send on batches blocks), and so the messages this process
// holds are bounded by (workers + 1) batches, however slow Elasticsearch is. With
// Consume the client buffers PullMaxMessages ahead whether or not anyone can index
// them, and their AckWait runs meanwhile. NATS alone drains far faster than
// Elasticsearch indexes (see the shared notes), so the round trips cost nothing
// measurable.
//
// Every pull ends on the server's word, never on a client deadline: FetchNoWait
// on its "no more messages" status, and the wait for a first message on
// FetchMaxWait's expiry notice. With FetchContext the client stops reading when
// its context ends, a tenth of the wait after the server stops sending, and a
// message still in transit is dropped unacked: it comes back only after
// AckWait, holding the consumer's ack floor, and so every follower, behind it
// meanwhile. A stop therefore waits for the pull in hand, at most BULK_MAX_WAIT.
func (in *Ingester) fetch(cons consumer) ([]jetstream.Msg, error) {
	msgs, err := pull(cons.FetchNoWait(in.cfg.BulkMaxDocs))
	if err == nil && len(msgs) == 0 {
		msgs, err = pull(cons.Fetch(1, jetstream.FetchMaxWait(in.cfg.BulkMaxWait)))
		if err == nil && len(msgs) > 0 && in.cfg.BulkMaxDocs > 1 {
			// What arrived with the first message joins it. A failure here
			// loses nothing: the next fetch takes those messages.
			if more, err := pull(cons.FetchNoWait(in.cfg.BulkMaxDocs - len(msgs))); err == nil {
				msgs = append(msgs, more...)
			}
		}
	}
	in.metrics.hold(len(msgs))
	return msgs, err
}

// pull reads one pull request's messages. Its end for want of messages (none
// waiting, or none within the wait) is not an error; any other is, unless
// messages came before it, which are then kept: the next pull reports it again.
func pull(res jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range res.Messages() {
		msgs = append(msgs, m)
	}
	err = res.Error()
	if err == nil || len(msgs) > 0 || errors.Is(err, jetstream.ErrNoMessages) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return msgs, nil
	}
	return nil, err
}

// batch is a bulk request's worth of documents and the messages they came from.
type batch struct {
	items []pipeline.Item
	msgs  []jetstream.Msg
	// refusals holds, per item whose members were set aside, the store's refusal
	// that made it so ("" for the others).
	refusals []string
	bytes    int
}

func (b *batch) add(it pipeline.Item, m jetstream.Msg, refusal string) {
	b.items = append(b.items, it)
	b.msgs = append(b.msgs, m)
	b.refusals = append(b.refusals, refusal)
	b.bytes += len(it.Body)
}

// batchesOf turns fetched messages into documents, dead-lettering those that can
// never be indexed, and splits them into batches of at most Config.BulkMaxBytes.
func (in *Ingester) batchesOf(ctx context.Context, msgs []jetstream.Msg) []*batch {
	var out []*batch
	cur := &batch{}
	for _, m := range msgs {
		doc, err := in.build(m)
		if err != nil {
			in.deadLetter(ctx, m, err)
			continue
		}
		if doc.Fallback != "" {
			in.fallbacks.note(doc.Fallback, m.Subject())
		}
		if cur.bytes > 0 && cur.bytes+len(doc.Body) > in.cfg.BulkMaxBytes {
			out = append(out, cur)
			cur = &batch{}
		}
		cur.add(pipeline.Item{ID: doc.ID, Timestamp: doc.Timestamp, Body: doc.Body}, m, "")
	}
	if len(cur.items) > 0 {
		out = append(out, cur)
	}
	return out
}

func (in *Ingester) build(m jetstream.Msg) (document.Document, error) {
	meta, err := m.Metadata()
	if err != nil {
		return document.Document{}, &pipeline.RejectError{Reason: pipeline.ReasonInvalidMessage, Detail: "message metadata: " + err.Error()}
	}
	if meta.NumDelivered > uint64(in.cfg.MaxDeliver) {
		return document.Document{}, &pipeline.RejectError{Reason: pipeline.ReasonMaxDeliveries,
			Detail: fmt.Sprintf("delivered %d times without being indexed (the limit is %d)", meta.NumDelivered, in.cfg.MaxDeliver)}
	}
	if len(m.Data()) > in.cfg.MaxMessageBytes {
		return document.Document{}, &pipeline.RejectError{Reason: pipeline.ReasonTooLarge,
			Detail: fmt.Sprintf("%d bytes, more than the limit of %d", len(m.Data()), in.cfg.MaxMessageBytes)}
	}
	src := document.Source{
		Subject:   m.Subject(),
		Stream:    meta.Stream,
		Sequence:  meta.Sequence.Stream,
		Published: meta.Timestamp,
		MsgID:     m.Headers().Get(jetstream.MsgIDHeader),
	}
	return document.Build(m.Data(), src, document.Options{
		TimestampField: in.cfg.TimestampField,
		DefaultZone:    in.cfg.DefaultZone,
		Required:       in.cfg.TimestampRequired,
		MaxPast:        in.cfg.TimestampMaxPast,
		MaxFuture:      in.cfg.TimestampMaxFuture,
	})
}

// jsErrCodeStreamSubjectOverlap is the JetStream error code of a stream whose
// subjects overlap another stream's (nats.go names no constant for it).
const jsErrCodeStreamSubjectOverlap jetstream.ErrorCode = 10065

// ErrDeadLetterSubjectsTaken is a dead-letter stream that cannot be created
// because another stream on the server (another pipeline's) takes its subjects.
var ErrDeadLetterSubjectsTaken = errors.New("another stream takes the dead-letter subjects")
