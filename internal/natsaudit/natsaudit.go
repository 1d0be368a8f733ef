// Package natsaudit is the JetStream side of an audit (audit.Stream): the
// stream's state, the first message since a time, the dead letters and the
// document ids of messages, read without disturbing the stream, its dead-letter
// stream or the webserver's durable consumer. It keeps NATS out of the audit's
// logic, which is tested against fakes.
package natsaudit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/audit"
	"github.com/annotated-data/pipeline/internal/document"
	"github.com/annotated-data/pipeline/internal/ingest"
)

// JetStream is the Stream of an audit: the stream, its dead-letter stream and its
// durable consumer, read without disturbing any of them.
type JetStream struct {
	JS        jetstream.JetStream
	Stream    string
	DLQStream string
	Durable   string
}

var _ audit.Stream = JetStream{}

// State reads the stream's info with the list of deleted sequences, and the
// durable's ack floor.
func (j JetStream) State(ctx context.Context) (audit.State, error) {
	s, err := j.JS.Stream(ctx, j.Stream)
	if err != nil {
		return audit.State{}, fmt.Errorf("look up stream %s: %w", j.Stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return audit.State{}, fmt.Errorf("stream %s info: %w", j.Stream, err)
	}
	st := audit.State{First: info.State.FirstSeq, Last: info.State.LastSeq, Deleted: slices.Clone(info.State.Deleted)}
	slices.Sort(st.Deleted)
	cons, err := j.JS.Consumer(ctx, j.Stream, j.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return audit.State{}, fmt.Errorf("look up consumer %s: %w", j.Durable, err)
	default:
		ci, err := cons.Info(ctx)
		if err != nil {
			return audit.State{}, fmt.Errorf("consumer %s info: %w", j.Durable, err)
		}
		st.Settled, st.HasDurable = ci.AckFloor.Stream, true
		if ci.NumAckPending == 0 && ci.NumPending == 0 {
			// Everything delivered is settled; the floor may stop short of the
			// stream's end when its last messages were deleted.
			st.Settled = max(st.Settled, ci.Delivered.Stream)
		}
	}
	return st, nil
}

// Since finds the first message published at or after t with an ordered consumer
// that reads one message's headers.
func (j JetStream) Since(ctx context.Context, t time.Time) (uint64, bool, error) {
	s, err := j.JS.Stream(ctx, j.Stream)
	if err != nil {
		return 0, false, fmt.Errorf("look up stream %s: %w", j.Stream, err)
	}
	info := s.CachedInfo()
	if info.State.Msgs == 0 {
		return info.State.LastSeq + 1, info.State.LastSeq > 0 && !info.State.LastTime.Before(t), nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t, HeadersOnly: true, InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return 0, false, fmt.Errorf("find the first message since %s: %w", t, err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
		return info.State.LastSeq + 1, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("find the first message since %s: %w", t, err)
	}
	meta, err := msg.Metadata()
	if err != nil {
		return 0, false, fmt.Errorf("find the first message since %s: %w", t, err)
	}
	seq := meta.Sequence.Stream
	// If the first message held was published after t, older ones of the window
	// may have been dropped: say so unless the stream never dropped any.
	return seq, seq == info.State.FirstSeq && info.State.FirstSeq > 1 && meta.Timestamp.After(t), nil
}

// DeadLetters reads the dead-letter stream.
func (j JetStream) DeadLetters(ctx context.Context) (map[uint64]int, error) {
	return ingest.DeadLetters(ctx, j.JS, j.DLQStream, j.Stream)
}

// DocumentIDs reads each message (a get by sequence; a few at once, since each
// is a round trip) and derives its document id as the webserver does.
func (j JetStream) DocumentIDs(ctx context.Context, seqs []uint64) (map[uint64]string, error) {
	s, err := j.JS.Stream(ctx, j.Stream)
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", j.Stream, err)
	}
	ids := make([]string, len(seqs))
	errs := make([]error, len(seqs))
	slots := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, seq := range seqs {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			m, err := s.GetMsg(ctx, seq)
			switch {
			case errors.Is(err, jetstream.ErrMsgNotFound):
			case err != nil:
				errs[i] = fmt.Errorf("read message %d of stream %s: %w", seq, j.Stream, err)
			default:
				ids[i] = document.ID(document.Source{Stream: j.Stream, Sequence: seq, MsgID: m.Header.Get(jetstream.MsgIDHeader)})
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err // the first is enough: the others are likely the same
		}
	}
	out := make(map[uint64]string, len(seqs))
	for i, seq := range seqs {
		if ids[i] != "" {
			out[seq] = ids[i]
		}
	}
	return out, nil
}
