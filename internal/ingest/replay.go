package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/annotated-data/pipeline/internal/progress"
)

// Window is a part of the stream to replay: by sequence (FromSeq to ToSeq, both
// included), or, when FromSeq is 0, by publish time (Since included, Until not).
type Window struct {
	FromSeq, ToSeq uint64    // ToSeq 0: up to the last message when the replay starts
	Since, Until   time.Time // zero Until: up to the last message when the replay starts
	Subjects       []string  // only messages on these subjects (wildcards allowed); none: all
}

// ReplayResult counts what a replay did. Indexed are the documents that were
// missing; a replay of a window Elasticsearch already holds in full indexes none
// and finds every document a duplicate.
type ReplayResult struct {
	Messages            int64 // read from the stream and settled
	Indexed             int64 // documents created
	Duplicates          int64 // documents that already existed
	DeadLettered        int64 // messages dead-lettered by this replay
	AlreadyDeadLettered int64 // messages that cannot be indexed and already had a dead letter
	// Unsettled messages were neither indexed nor dead-lettered: the replay was
	// stopped, or a dead letter could not be stored. Replay them again.
	Unsettled int64
	// FirstHeld is the first sequence the stream still holds. Trimmed says that
	// part of a window lies before it, beyond the stream's retention, and was not
	// replayed.
	FirstHeld uint64
	Trimmed   bool
}

// Settled counts the messages replayed for good: indexed, found indexed, or
// dead-lettered (by this replay or before).
func (r ReplayResult) Settled() int64 { return r.Messages - r.Unsettled }

// replaying is the settler of a replay, which reads through an ephemeral
// ordered consumer: there is nothing to acknowledge or keep in progress, so it
// counts how each message was settled, and knows the messages dead-lettered
// before.
type replaying struct {
	letters   map[uint64]int // original sequence → dead letters, read when the replay starts
	bar       *progress.Reporter
	already   atomic.Int64
	unsettled atomic.Int64
}

var _ settler = (*replaying)(nil)

func (r *replaying) settle(_ jetstream.Msg, s settlement) {
	if s == nak || s == nakLater {
		r.unsettled.Add(1)
	}
	r.bar.Add(1)
}

func (r *replaying) keepInProgress([]jetstream.Msg) (stop func()) { return func() {} }

// batchSettled: a replay moves no ack floor, so it has nothing to announce.
func (r *replaying) batchSettled() {}

// alreadyDeadLettered says whether m has a dead letter: a replay dead-letters a
// message once, however often it runs, since the dead letter's own id only
// deduplicates within the stream's duplicate window.
func (r *replaying) alreadyDeadLettered(m jetstream.Msg) bool {
	meta, err := m.Metadata()
	if err != nil || r.letters[meta.Sequence.Stream] == 0 {
		return false
	}
	r.already.Add(1)
	return true
}

// Replay re-ingests windows of the stream. Each window is read through an
// ephemeral ordered consumer of its own, which acknowledges nothing, so the
// durable consumer of live ingestion and its position are never touched; the
// messages then take the very path of live ingestion (batchesOf, index,
// deadLetter): the same documents, ids, indices and dead-letter rules. Replaying
// is idempotent: ids are deterministic and op_type=create turns a document that
// exists into a duplicate, and a message that already has a dead letter gets no
// second one. Progress, with rate and time left, goes to progressOut.
func Replay(ctx context.Context, js JetStream, st Indexer, cfg Config, log *slog.Logger, windows []Window, progressOut io.Writer) (ReplayResult, error) {
	in := New(js, st, cfg, log, NewMetrics(prometheus.NewRegistry()))
	var res ReplayResult
	stream, err := js.Stream(ctx, in.cfg.Stream)
	if err != nil {
		return res, fmt.Errorf("look up stream %s: %w", in.cfg.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("stream %s info: %w", in.cfg.Stream, err)
	}
	state := info.State
	res.FirstHeld = state.FirstSeq
	if err := in.ensureDeadLetterStream(ctx); err != nil {
		return res, err
	}
	letters, err := DeadLetters(ctx, js, in.cfg.DLQStream, in.cfg.Stream)
	if err != nil {
		return res, err
	}

	type planned struct {
		cons consumer
		w    Window
		last uint64
		n    uint64 // messages to expect, at most
	}
	var plans []planned
	var total int64
	for _, w := range windows {
		last := state.LastSeq
		if w.ToSeq > 0 {
			last = min(last, w.ToSeq)
		}
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: w.Subjects, InactiveThreshold: time.Minute}
		switch {
		case w.FromSeq > 0:
			res.Trimmed = res.Trimmed || (w.FromSeq < state.FirstSeq && w.FromSeq <= state.LastSeq)
			if max(w.FromSeq, state.FirstSeq) > last {
				continue
			}
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, max(w.FromSeq, state.FirstSeq)
		case !w.Since.IsZero():
			trimmed, err := beforeFirstHeld(ctx, stream, info, w.Since, w.Until)
			if err != nil {
				return res, err
			}
			res.Trimmed = res.Trimmed || trimmed
			since := w.Since
			cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
		}
		if state.Msgs == 0 {
			continue
		}
		// Messages from Until on are not the window's: counted first, so that
		// messages published meanwhile can only make the window seem larger, never
		// cut it short.
		var after uint64
		if w.FromSeq == 0 && !w.Until.IsZero() {
			if after, err = pendingSince(ctx, stream, w.Subjects, w.Until); err != nil {
				return res, err
			}
		}
		cons, err := stream.OrderedConsumer(ctx, cfg)
		if err != nil {
			return res, fmt.Errorf("ordered consumer on stream %s: %w", in.cfg.Stream, err)
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return res, fmt.Errorf("ordered consumer on stream %s: %w", in.cfg.Stream, err)
		}
		n := ci.NumPending - min(after, ci.NumPending)
		if w.FromSeq > 0 {
			n = min(n, last-cfg.OptStartSeq+1)
		}
		if n == 0 {
			continue // nothing was published in the window
		}
		total += int64(n)
		plans = append(plans, planned{cons: cons, w: w, last: last, n: n})
	}

	rp := &replaying{letters: letters, bar: progress.New(progressOut, "messages", total)}
	in.settler = rp
	for _, p := range plans {
		if err = in.replayWindow(ctx, p.cons, p.w, p.last, p.n); err != nil {
			break
		}
	}
	rp.bar.Finish()
	f := in.metrics.figures()
	res.Indexed, res.Duplicates, res.DeadLettered = f.indexed, f.duplicates, f.deadLettered
	res.AlreadyDeadLettered, res.Unsettled = rp.already.Load(), rp.unsettled.Load()
	res.Messages = res.Indexed + res.Duplicates + res.DeadLettered + res.AlreadyDeadLettered + res.Unsettled
	return res, err
}

// beforeFirstHeld reports whether messages published from t to until (zero: on)
// may have been dropped already: the stream once held messages before its first
// one, that first one was published after t, and the stream existed before until.
func beforeFirstHeld(ctx context.Context, stream jetstream.Stream, info *jetstream.StreamInfo, t, until time.Time) (bool, error) {
	state := info.State
	if state.FirstSeq <= 1 {
		return false, nil
	}
	if !until.IsZero() && !until.After(info.Created) {
		return false, nil // nothing was published before the stream was created
	}
	if state.Msgs == 0 {
		return !state.LastTime.Before(t), nil
	}
	first, err := stream.GetMsg(ctx, state.FirstSeq)
	if err != nil {
		return false, fmt.Errorf("read first message of the stream (sequence %d): %w", state.FirstSeq, err)
	}
	return first.Time.After(t), nil
}

// pendingSince counts the messages on subjects (none: all) published since t.
func pendingSince(ctx context.Context, stream jetstream.Stream, subjects []string, t time.Time) (uint64, error) {
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t,
		HeadersOnly: true, InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return 0, fmt.Errorf("count the messages since %s: %w", t.Format(time.RFC3339), err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("count the messages since %s: %w", t.Format(time.RFC3339), err)
	}
	return ci.NumPending, nil
}

// replayWindow indexes the messages of w up to sequence last, at most n of them,
// with the bulk workers, as consume does for the durable.
func (in *Ingester) replayWindow(ctx context.Context, cons consumer, w Window, last, n uint64) error {
	// As in consume: batches in hand may finish for ShutdownTimeout after a stop.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopAfter := context.AfterFunc(ctx, func() { time.AfterFunc(in.cfg.ShutdownTimeout, cancelWork) })
	defer stopAfter()

	var err error
	in.withWorkers(work, func(batches chan<- *batch) {
		left := n
		for ctx.Err() == nil && left > 0 {
			var msgs []jetstream.Msg
			var done bool
			msgs, left, done, err = in.fetchWindow(ctx, cons, w, last, left)
			if err != nil {
				return
			}
			for _, b := range in.batchesOf(work, msgs) {
				batches <- b
			}
			if done {
				return
			}
		}
		if err == nil {
			err = ctx.Err()
		}
	})
	return err
}

// fetchWindow fetches the next batch of w, of which left messages at most are
// still to come (a fetch waits until its batch is full, so it never asks for more);
// it returns how many may still come after, and done when the window ends.
func (in *Ingester) fetchWindow(ctx context.Context, cons consumer, w Window, last, left uint64) (msgs []jetstream.Msg, stillLeft uint64, done bool, err error) {
	fctx, cancel := context.WithTimeout(ctx, in.cfg.BulkMaxWait)
	defer cancel()
	res, err := cons.Fetch(int(min(uint64(in.cfg.BulkMaxDocs), left)), jetstream.FetchContext(fctx))
	if err != nil {
		return nil, 0, false, fmt.Errorf("fetch from stream %s: %w", in.cfg.Stream, err)
	}
	stillLeft = left
	for m := range res.Messages() {
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		seq := meta.Sequence.Stream
		if seq > last || (!w.Until.IsZero() && !meta.Timestamp.Before(w.Until)) {
			done = true // past the window; an ordered consumer needs no ack
			continue
		}
		if !done {
			msgs = append(msgs, m)
		}
		stillLeft = min(meta.NumPending, last-seq)
		if stillLeft == 0 {
			done = true
		}
	}
	in.metrics.hold(len(msgs))
	if err := res.Error(); err != nil && len(msgs) == 0 && !done &&
		!errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
		return nil, 0, false, fmt.Errorf("fetch from stream %s: %w", in.cfg.Stream, err)
	}
	if len(msgs) == 0 && !done {
		// Nothing came: the window may hold no message at all (a filter that
		// matches none).
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, 0, false, fmt.Errorf("ordered consumer on stream %s: %w", in.cfg.Stream, err)
		}
		done = info.NumPending == 0
	}
	return msgs, stillLeft, done, nil
}
