// Package ingest moves messages from a JetStream stream into Elasticsearch. A message
// is acknowledged only once Elasticsearch holds its document (or already held it);
// a message that can never be indexed goes to the dead-letter stream with its
// reason; anything else is left for redelivery.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/document"
	"github.com/annotated-data/pipeline/internal/store"
)

// Ingester consumes one stream through one durable consumer.
type Ingester struct {
	js    jetstream.JetStream
	store *store.Store
	cfg   config.Webserver
	log   *slog.Logger
}

// New returns an ingester; Run does the work.
func New(js jetstream.JetStream, st *store.Store, cfg config.Webserver, log *slog.Logger) *Ingester {
	return &Ingester{js: js, store: st, cfg: cfg, log: log}
}

// Run creates the streams and the consumer if they are missing, then fetches,
// indexes and acknowledges batches until ctx is cancelled.
func (in *Ingester) Run(ctx context.Context) error {
	if err := in.ensureStream(ctx, in.cfg.Stream, in.cfg.Subjects); err != nil {
		return err
	}
	if err := in.ensureStream(ctx, in.cfg.DLQStream, []string{dlqPrefix + ">"}); err != nil {
		return err
	}
	cons, err := in.js.CreateOrUpdateConsumer(ctx, in.cfg.Stream, jetstream.ConsumerConfig{
		Durable:       in.cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: in.cfg.MaxAckPending,
		AckWait:       ackWait,
	})
	if err != nil {
		return fmt.Errorf("create consumer %s on stream %s: %w", in.cfg.Durable, in.cfg.Stream, err)
	}
	in.log.Info("consuming", "stream", in.cfg.Stream, "durable", in.cfg.Durable)

	// A stop signal ends fetching at once, but the batch in hand is still indexed and
	// acked, for up to SHUTDOWN_TIMEOUT: cancelling it would only cause redeliveries.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopAfter := context.AfterFunc(ctx, func() { time.AfterFunc(in.cfg.ShutdownTimeout, cancelWork) })
	defer stopAfter()

	var failures int
	for ctx.Err() == nil {
		msgs, err := fetch(cons, in.cfg.BulkMaxDocs, in.cfg.BulkMaxWait)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			in.log.Warn("fetch failed", "err", err)
			failures++
			sleep(ctx, backoff(failures))
			continue
		}
		if len(msgs) == 0 {
			continue
		}
		if err := in.process(work, msgs); err != nil {
			failures++
			wait := backoff(failures)
			in.log.Warn("batch not indexed, will be redelivered", "messages", len(msgs), "retry_in", wait, "err", err)
			for _, m := range msgs {
				m.NakWithDelay(wait)
			}
			sleep(ctx, wait)
			continue
		}
		failures = 0
	}
	return nil
}

// ackWait is how long JetStream waits for an ack before redelivering.
const ackWait = 30 * time.Second

func fetch(cons jetstream.Consumer, n int, wait time.Duration) ([]jetstream.Msg, error) {
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && len(msgs) == 0 {
		return nil, err
	}
	return msgs, nil
}

// process indexes one batch. It returns an error only when the bulk request as a
// whole failed; the caller then leaves every message for redelivery.
func (in *Ingester) process(ctx context.Context, msgs []jetstream.Msg) error {
	items := make([]store.Item, 0, len(msgs))
	pending := make([]jetstream.Msg, 0, len(msgs))
	for _, m := range msgs {
		doc, err := in.build(m)
		if err != nil {
			in.deadLetter(ctx, m, err)
			continue
		}
		items = append(items, store.Item{ID: doc.ID, Timestamp: doc.Timestamp, Body: doc.Body})
		pending = append(pending, m)
	}
	if len(items) == 0 {
		return nil
	}
	results, err := in.store.Bulk(ctx, items)
	if err != nil {
		return err
	}
	for i, r := range results {
		m := pending[i]
		switch r.Outcome {
		case store.Created, store.Duplicate:
			m.Ack()
		case store.Retry:
			m.NakWithDelay(backoff(1))
		case store.Rejected:
			in.deadLetter(ctx, m, &document.RejectError{Reason: document.Reason(r.Type), Detail: r.Reason})
		}
	}
	return nil
}

func (in *Ingester) build(m jetstream.Msg) (document.Document, error) {
	meta, err := m.Metadata()
	if err != nil {
		return document.Document{}, fmt.Errorf("message metadata: %w", err)
	}
	src := document.Source{
		Subject:   m.Subject(),
		Stream:    meta.Stream,
		Sequence:  meta.Sequence.Stream,
		Published: meta.Timestamp,
		MsgID:     m.Headers().Get(jetstream.MsgIDHeader),
	}
	return document.Build(m.Data(), src, document.Options{TimestampField: in.cfg.TimestampField, DefaultZone: in.cfg.DefaultZone})
}

func (in *Ingester) ensureStream(ctx context.Context, name string, subjects []string) error {
	_, err := in.js.Stream(ctx, name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("look up stream %s: %w", name, err)
	}
	_, err = in.js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: subjects, Storage: jetstream.FileStorage})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %s: %w", name, err)
	}
	in.log.Info("created stream", "stream", name, "subjects", subjects)
	return nil
}

// backoff is exponential with full jitter, capped at 30s.
func backoff(attempt int) time.Duration {
	ceiling := min(30*time.Second, 100*time.Millisecond<<min(attempt, 10))
	return time.Duration(rand.Int64N(int64(ceiling))) + 10*time.Millisecond
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
