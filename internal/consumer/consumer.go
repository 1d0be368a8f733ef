// Package consumer reads the webserver's progress from JetStream: how far its
// durable consumer has settled the stream, and where a moment in the stream's
// history falls. The backend's follow mode is built on these two facts.
package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Consumer is the webserver's durable consumer on its stream.
type Consumer struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  string
	durable string
}

// New reads the consumer durable of stream over nc.
func New(nc *nats.Conn, stream, durable string) (*Consumer, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Consumer{nc: nc, js: js, stream: stream, durable: durable}, nil
}

// SettledSubject is the core NATS subject on which the webserver of stream and
// durable announces each settled batch, so that followers read the ack floor at
// once instead of at their next poll. The notice carries nothing: the floor
// stays the only proof of what is settled, and a lost notice only delays.
func SettledSubject(stream, durable string) string {
	return "pipeline.settled." + stream + "." + durable
}

// WhenSettled calls fn on every notice of SettledSubject, until the returned
// subscription is drained or the connection closes.
func (c *Consumer) WhenSettled(fn func()) (*nats.Subscription, error) {
	sub, err := c.nc.Subscribe(SettledSubject(c.stream, c.durable), func(*nats.Msg) { fn() })
	if err != nil {
		return nil, fmt.Errorf("subscribe to the webserver's notices on %s: %w", SettledSubject(c.stream, c.durable), err)
	}
	return sub, nil
}

// ErrMissing means the stream or the consumer does not exist (yet): the webserver
// creates both when it first starts.
var ErrMissing = errors.New("the webserver's stream or consumer does not exist yet")

// Settled returns the consumer's ack floor: every message with a stream sequence
// up to it is settled, its document indexed or the message dead-lettered (a
// terminated message counts as acknowledged), and the floor passes over deleted
// messages. It never passes a message still in flight, whichever replica holds
// it, so it only grows while the webserver makes progress.
func (c *Consumer) Settled(ctx context.Context) (uint64, error) {
	// Binding the consumer asks the server for its info: one request.
	cons, err := c.js.Consumer(ctx, c.stream, c.durable)
	if err != nil {
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return 0, fmt.Errorf("consumer %s on stream %s: %w", c.durable, c.stream, ErrMissing)
		}
		return 0, fmt.Errorf("consumer %s on stream %s: %w", c.durable, c.stream, err)
	}
	return cons.CachedInfo().AckFloor.Stream, nil
}

// msgGetRequest is the JetStream API's STREAM.MSG.GET request; nats.go has no
// option for its start_time, which finds the first message stored at or after
// a time.
type msgGetRequest struct {
	StartTime time.Time `json:"start_time"`
}

type msgGetResponse struct {
	Message *struct {
		Seq uint64 `json:"seq"`
	} `json:"message"`
	Error *struct {
		Code    int    `json:"code"`
		ErrCode int    `json:"err_code"`
		Desc    string `json:"description"`
	} `json:"error"`
}

// errCodeNoMessageFound is JetStream's JSNoMessageFoundErr.
const errCodeNoMessageFound = 10037

// PublishedBefore returns the sequence of the last message the stream stored
// before t (by the server's clock), and whether that is final: it is once a
// message stored at or after t exists, since sequences only grow with time.
// Before that, last is the stream's last sequence so far.
func (c *Consumer) PublishedBefore(ctx context.Context, t time.Time) (last uint64, final bool, err error) {
	// The stream's state first: a message stored after this read has a larger
	// sequence, so if the search below finds none at or after t, none of the
	// messages up to this last sequence was stored at or after t either.
	s, err := c.js.Stream(ctx, c.stream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return 0, false, fmt.Errorf("stream %s: %w", c.stream, ErrMissing)
		}
		return 0, false, fmt.Errorf("stream %s: %w", c.stream, err)
	}
	lastSeq := s.CachedInfo().State.LastSeq

	body, _ := json.Marshal(msgGetRequest{StartTime: t.UTC()})
	msg, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+c.stream, body)
	if err != nil {
		return 0, false, fmt.Errorf("stream %s: find the first message at %s: %w", c.stream, t.Format(time.RFC3339Nano), err)
	}
	var res msgGetResponse
	if err := json.Unmarshal(msg.Data, &res); err != nil {
		return 0, false, fmt.Errorf("stream %s: decode message lookup: %w", c.stream, err)
	}
	switch {
	case res.Error != nil && res.Error.ErrCode == errCodeNoMessageFound:
		return lastSeq, false, nil
	case res.Error != nil:
		return 0, false, fmt.Errorf("stream %s: find the first message at %s: %s (%d)", c.stream, t.Format(time.RFC3339Nano), res.Error.Desc, res.Error.ErrCode)
	case res.Message == nil:
		return 0, false, fmt.Errorf("stream %s: message lookup answered neither a message nor an error", c.stream)
	}
	return res.Message.Seq - 1, true, nil
}
