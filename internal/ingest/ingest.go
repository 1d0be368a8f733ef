// Package ingest moves messages from a JetStream stream into Elasticsearch.
//
// One goroutine fetches messages and groups them into bulk batches; BULK_WORKERS
// goroutines send the batches to Elasticsearch. A message is acknowledged only once
// Elasticsearch holds its document (or already held it); a message that can never be
// indexed goes to the dead-letter stream with its reason; anything else is retried,
// with the message kept in progress, until it succeeds. When every worker is busy
// the fetcher waits, so the messages held at once are bounded by the workers and the
// batch size (and by the consumer's MaxAckPending across replicas), however large
// the backlog.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/document"
	"github.com/annotated-data/pipeline/internal/store"
)

// Indexer is what the ingester needs of the store.
type Indexer interface {
	Bulk(ctx context.Context, items []store.Item) ([]store.ItemResult, error)
}

// Ingester consumes one stream through one durable consumer.
type Ingester struct {
	js        jetstream.JetStream
	store     Indexer
	cfg       config.Webserver
	log       *slog.Logger
	metrics   *Metrics
	es        *esState
	fallbacks *fallbacks
}

// New returns an ingester; Run does the work.
func New(js jetstream.JetStream, st Indexer, cfg config.Webserver, log *slog.Logger, m *Metrics) *Ingester {
	return &Ingester{js: js, store: st, cfg: cfg, log: log, metrics: m, es: &esState{log: log, metrics: m},
		fallbacks: &fallbacks{log: log, metrics: m, field: cfg.TimestampField, every: fallbackLogInterval}}
}

// ElasticsearchErr is non-nil while bulk requests cannot reach Elasticsearch.
func (in *Ingester) ElasticsearchErr() error { return in.es.err() }

// Run creates the streams and the consumer if they are missing, then ingests until
// ctx is cancelled. It then stops fetching, lets the batches in hand finish for up to
// SHUTDOWN_TIMEOUT, and returns; whatever was not acked by then is redelivered later.
func (in *Ingester) Run(ctx context.Context) error {
	if err := in.ensureStream(ctx, jetstream.StreamConfig{
		Name:       in.cfg.Stream,
		Subjects:   in.cfg.Subjects,
		Storage:    jetstream.FileStorage,
		MaxAge:     in.cfg.StreamMaxAge,
		MaxBytes:   in.cfg.StreamMaxBytes,
		Replicas:   in.cfg.StreamReplicas,
		Duplicates: in.cfg.DuplicateWindow,
	}); err != nil {
		return err
	}
	if err := in.ensureStream(ctx, jetstream.StreamConfig{
		Name:     in.cfg.DLQStream,
		Subjects: []string{in.cfg.DLQSubjectPrefix + ".>"},
		Storage:  jetstream.FileStorage,
		Replicas: in.cfg.StreamReplicas,
	}); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeStreamSubjectOverlap {
			// Another pipeline on this server dead-letters under the same prefix.
			return fmt.Errorf("%w; give this pipeline a NATS_DLQ_SUBJECT_PREFIX of its own", err)
		}
		return err
	}
	cons, err := in.js.CreateOrUpdateConsumer(ctx, in.cfg.Stream, jetstream.ConsumerConfig{
		Durable:       in.cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       in.cfg.AckWait,
		MaxAckPending: in.cfg.MaxAckPending,
		// Redelivery is unlimited on the server: a message that keeps coming back is
		// moved to the dead-letter stream here (NATS_MAX_DELIVER), never dropped.
		MaxDeliver: -1,
	})
	if err != nil {
		return fmt.Errorf("create consumer %s on stream %s: %w", in.cfg.Durable, in.cfg.Stream, err)
	}
	in.log.Info("consuming", "stream", in.cfg.Stream, "durable", in.cfg.Durable,
		"bulk_workers", in.cfg.BulkWorkers, "bulk_max_docs", in.cfg.BulkMaxDocs, "max_ack_pending", in.cfg.MaxAckPending)

	// Work in hand outlives the stop signal by up to SHUTDOWN_TIMEOUT: cancelling a
	// bulk request that is about to succeed would only cause redeliveries.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopAfter := context.AfterFunc(ctx, func() { time.AfterFunc(in.cfg.ShutdownTimeout, cancelWork) })
	defer stopAfter()

	batches := make(chan *batch)
	var wg sync.WaitGroup
	for range in.cfg.BulkWorkers {
		wg.Go(func() {
			for b := range batches {
				in.index(work, b)
			}
		})
	}
	wg.Go(func() { in.reportProgress(ctx, cons) })

	in.fetchLoop(ctx, work, cons, batches)
	close(batches)
	wg.Wait()
	return nil
}

// fetchLoop fetches until ctx ends, handing batches to the workers; sending blocks
// while every worker is busy, which is what pauses fetching when Elasticsearch is
// slow or down.
func (in *Ingester) fetchLoop(ctx, work context.Context, cons jetstream.Consumer, batches chan<- *batch) {
	failures := 0
	for ctx.Err() == nil {
		msgs, err := in.fetch(ctx, cons)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if failures == 0 {
				in.log.Warn("fetching from nats failed; retrying", "err", err)
			}
			failures++
			sleep(ctx, backoff(failures))
			continue
		}
		if failures > 0 {
			in.log.Info("fetching from nats again", "after_failures", failures)
			failures = 0
		}
		for _, b := range in.batchesOf(work, msgs) {
			batches <- b
		}
	}
}

// fetch pulls up to one batch of messages, waiting at most BULK_MAX_WAIT for them.
func (in *Ingester) fetch(ctx context.Context, cons jetstream.Consumer) ([]jetstream.Msg, error) {
	fctx, cancel := context.WithTimeout(ctx, in.cfg.BulkMaxWait)
	defer cancel()
	res, err := cons.Fetch(in.cfg.BulkMaxDocs, jetstream.FetchContext(fctx))
	if err != nil {
		return nil, err
	}
	msgs := make([]jetstream.Msg, 0, in.cfg.BulkMaxDocs)
	for m := range res.Messages() {
		msgs = append(msgs, m)
	}
	in.metrics.hold(len(msgs))
	err = res.Error()
	if err == nil || len(msgs) > 0 || errors.Is(err, jetstream.ErrNoMessages) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return msgs, nil
	}
	return nil, err
}

// batch is a bulk request's worth of documents and the messages they came from.
type batch struct {
	items []store.Item
	msgs  []jetstream.Msg
	bytes int
}

func (b *batch) add(it store.Item, m jetstream.Msg) {
	b.items = append(b.items, it)
	b.msgs = append(b.msgs, m)
	b.bytes += len(it.Body)
}

// batchesOf turns fetched messages into documents, dead-lettering those that can
// never be indexed, and splits them into batches of at most BULK_MAX_BYTES.
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
		cur.add(store.Item{ID: doc.ID, Timestamp: doc.Timestamp, Body: doc.Body}, m)
	}
	if len(cur.items) > 0 {
		out = append(out, cur)
	}
	return out
}

// Reasons the ingester itself gives for dead-lettering, besides the document's.
const (
	reasonTooLarge      document.Reason = "too_large"
	reasonMaxDeliveries document.Reason = "max_deliveries"
)

func (in *Ingester) build(m jetstream.Msg) (document.Document, error) {
	meta, err := m.Metadata()
	if err != nil {
		return document.Document{}, fmt.Errorf("message metadata: %w", err)
	}
	if meta.NumDelivered > uint64(in.cfg.MaxDeliver) {
		return document.Document{}, &document.RejectError{Reason: reasonMaxDeliveries,
			Detail: fmt.Sprintf("delivered %d times without being indexed (NATS_MAX_DELIVER=%d)", meta.NumDelivered, in.cfg.MaxDeliver)}
	}
	if len(m.Data()) > in.cfg.MaxMessageBytes {
		return document.Document{}, &document.RejectError{Reason: reasonTooLarge,
			Detail: fmt.Sprintf("%d bytes, more than MAX_MESSAGE_BYTES=%d", len(m.Data()), in.cfg.MaxMessageBytes)}
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
	})
}

// jsErrCodeStreamSubjectOverlap is the JetStream error code of a stream whose
// subjects overlap another stream's (nats.go names no constant for it).
const jsErrCodeStreamSubjectOverlap jetstream.ErrorCode = 10065

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

// backoff is exponential with full jitter, from 100ms up to a 30s ceiling.
func backoff(attempt int) time.Duration {
	ceiling := min(30*time.Second, 100*time.Millisecond<<min(attempt, 9))
	return time.Duration(rand.Int64N(int64(ceiling))) + 10*time.Millisecond
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
