package ingest

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// dlqPrefix is prepended to a message's subject in the dead-letter stream.
const dlqPrefix = "dlq."

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
	dl := nats.NewMsg(dlqPrefix + m.Subject())
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
