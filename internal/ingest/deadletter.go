package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers added to a dead-lettered message.
const (
	HeaderReason          = "Dlq-Reason"
	HeaderDetail          = "Dlq-Detail"
	HeaderOriginalSubject = "Dlq-Original-Subject"
	HeaderOriginalStream  = "Dlq-Original-Stream"
	HeaderOriginalSeq     = "Dlq-Original-Sequence"
	HeaderOriginalMsgID   = "Dlq-Original-Msg-Id"
)

// deadLetter publishes m with its reason to the dead-letter stream and only then
// terminates it, so a message is never dropped: if the publish fails, m is handed
// back for redelivery.
func (in *Ingester) deadLetter(ctx context.Context, m jetstream.Msg, cause error) {
	reason, detail := pipeline.ReasonInvalidMessage, cause.Error()
	var rej *pipeline.RejectError
	if errors.As(cause, &rej) {
		reason, detail = rej.Reason, rej.Detail
	}
	if in.settler.alreadyDeadLettered(m) {
		// A replay dead-letters a message once, however often it runs (replaying).
		in.settle(m, term)
		return
	}
	dl := nats.NewMsg(in.cfg.DLQSubjectPrefix + "." + m.Subject())
	dl.Data = m.Data()
	for k, v := range m.Headers() {
		dl.Header[k] = v
	}
	// The dead letter's own id is its stream position: dead-lettering the same
	// message twice (a crash between publish and terminate) stores it once, while
	// the producer's id, kept under another name, cannot make the dead-letter
	// stream drop a different message that reused it.
	dl.Header.Del(jetstream.MsgIDHeader)
	if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" {
		dl.Header.Set(HeaderOriginalMsgID, id)
	}
	dl.Header.Set(HeaderReason, string(reason))
	dl.Header.Set(HeaderDetail, truncate(detail, 1024))
	dl.Header.Set(HeaderOriginalSubject, m.Subject())
	if meta, err := m.Metadata(); err == nil {
		seq := strconv.FormatUint(meta.Sequence.Stream, 10)
		dl.Header.Set(HeaderOriginalStream, meta.Stream)
		dl.Header.Set(HeaderOriginalSeq, seq)
		dl.Header.Set(jetstream.MsgIDHeader, "dlq-"+meta.Stream+"-"+seq)
	}
	if _, err := in.js.PublishMsg(ctx, dl); err != nil {
		in.log.Warn("dead-letter publish failed, message left for redelivery", "subject", m.Subject(), "reason", reason, "err", err)
		in.settle(m, nakLater)
		return
	}
	in.log.Debug("dead-lettered", slog.String("subject", m.Subject()), slog.String("reason", string(reason)))
	in.metrics.deadLettered.WithLabelValues(string(reason)).Inc()
	in.settle(m, term)
}

// truncate shortens s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// DeadLetters reads the dead-letter stream dlqStream and counts, by original
// sequence, the dead letters of the messages of stream. It reads headers only,
// through an ephemeral ordered consumer, so it costs one small message per dead
// letter and disturbs no other consumer. A missing dead-letter stream holds none.
func DeadLetters(ctx context.Context, js JetStream, dlqStream, stream string) (map[uint64]int, error) {
	letters := map[uint64]int{}
	s, err := js.Stream(ctx, dlqStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return letters, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up dead-letter stream %s: %w", dlqStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %s info: %w", dlqStream, err)
	}
	if info.State.Msgs == 0 {
		return letters, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read dead-letter stream %s: %w", dlqStream, err)
	}
	for read := uint64(0); read < info.State.Msgs; {
		// Never more than the stream holds: a fetch waits until its batch is full.
		batch, err := cons.Fetch(int(min(4096, info.State.Msgs-read)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("read dead-letter stream %s: %w", dlqStream, err)
		}
		got := 0
		last := false
		for m := range batch.Messages() {
			got++
			h := m.Headers()
			if h.Get(HeaderOriginalStream) == stream {
				if seq, err := strconv.ParseUint(h.Get(HeaderOriginalSeq), 10, 64); err == nil {
					letters[seq]++
				}
			}
			if meta, err := m.Metadata(); err == nil && meta.NumPending == 0 {
				last = true
			}
		}
		if err := batch.Error(); err != nil && got == 0 && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("read dead-letter stream %s: %w", dlqStream, err)
		}
		if last || got == 0 {
			break
		}
		read += uint64(got)
	}
	return letters, nil
}
