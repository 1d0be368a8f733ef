package ingest

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/dial"
	"github.com/annotated-data/pipeline/internal/pipeline"
)

// index sends one batch to the store and settles every message: ack when its
// document was created or already existed, dead-letter when it was rejected, and
// send again (with backoff, keeping the message in progress) when the failure was
// temporary. A document the index's mapping cannot take is sent again at once
// with the members the store named set aside. If ctx ends first, the messages
// left are handed back for redelivery.
func (in *Ingester) index(ctx context.Context, b *batch) {
	pending := b
	wait := false // whether pending failed for a reason that time may cure
	for attempt := 0; len(pending.items) > 0; attempt++ {
		if wait && !in.pause(ctx, in.retry.Delay(attempt), pending.msgs) {
			break
		}
		results, err := in.bulk(ctx, pending)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			in.es.failed(err)
			in.metrics.retried.Add(float64(len(pending.items)))
			wait = true
			continue
		}
		in.es.succeeded()

		retry := &batch{}
		wait = false
		for i, r := range results {
			m, refusal := pending.msgs[i], pending.refusals[i]
			switch r.Outcome {
			case pipeline.Created:
				in.metrics.indexed.Inc()
				if refusal != "" {
					in.asides.stored(m.Subject(), refusal)
				}
				in.settle(m, ack)
			case pipeline.Duplicate:
				in.metrics.duplicates.Inc()
				in.settle(m, ack)
			case pipeline.Retry:
				retry.add(pending.items[i], m, refusal)
				wait = true
				in.metrics.retried.Inc()
			case pipeline.Unmapped:
				if it, ok := in.asides.reshape(pending.items[i], r); ok {
					retry.add(it, m, cmp.Or(refusal, r.Reason))
					continue
				}
				fallthrough // nothing of the message's own is left to set aside
			case pipeline.Rejected:
				in.deadLetter(ctx, m, &pipeline.RejectError{Reason: pipeline.Reason(r.Type), Detail: r.Reason})
			}
		}
		if attempt == persistentAfter && wait {
			r := results[slices.IndexFunc(results, func(r pipeline.ItemResult) bool { return r.Outcome == pipeline.Retry })]
			in.log.Warn("documents keep failing; retrying until they succeed", "documents", len(retry.items),
				"attempts", attempt+1, "status", r.Status, "error_type", r.Type, "reason", r.Reason)
		}
		pending = retry
	}
	// Messages are left only when ctx ended (the shutdown timeout passed): hand
	// them back at once, so another replica need not wait out AckWait.
	for _, m := range pending.msgs {
		in.settle(m, nak)
	}
}

// persistentAfter is the attempt after which item failures are worth an operator's
// attention (logged once per batch); a passing 429 resolves well before.
const persistentAfter = 5

// bulk sends one bulk request, keeping the batch's messages in progress while it
// runs so JetStream does not redeliver them meanwhile.
func (in *Ingester) bulk(ctx context.Context, b *batch) ([]pipeline.ItemResult, error) {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.BulkTimeout)
	defer cancel()
	stop := in.settler.keepInProgress(b.msgs)
	defer stop()
	start := time.Now()
	results, err := in.store.Bulk(ctx, b.items)
	in.metrics.bulkSeconds.Observe(time.Since(start).Seconds())
	in.metrics.bulkDocs.Observe(float64(len(b.items)))
	return results, err
}

// pause waits d before a retry, keeping msgs in progress. It reports false if ctx
// ended first.
func (in *Ingester) pause(ctx context.Context, d time.Duration, msgs []jetstream.Msg) bool {
	stop := in.settler.keepInProgress(msgs)
	defer stop()
	return dial.Sleep(ctx, d)
}

// keepInProgress tells JetStream every period that msgs are still being worked on,
// until the returned function is called.
func keepInProgress(msgs []jetstream.Msg, period time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					// A lost keep-alive costs at most a redelivery, which op_type=create
					// turns into a duplicate.
					_ = m.InProgress()
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
