// Package publish sends messages to JetStream for the publisher tool: generated
// sample frames or a replayed NDJSON file, at a chosen rate, each acknowledged by
// the stream before it counts as published.
package publish

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/annotated-data/pipeline/internal/sample"
)

// Message is one message to publish.
type Message struct {
	Subject string
	ID      string // sent as Nats-Msg-Id; empty for none
	Data    []byte
}

// Source yields messages until it returns io.EOF.
type Source interface {
	Next() (Message, error)
}

type frames struct {
	gen    *sample.Generator
	prefix string
	left   int
}

// Frames yields count generated camera frames on <prefix>.<camera id>, each with
// its frame's id, so publishing the same frames again stores nothing new.
func Frames(gen *sample.Generator, prefix string, count int) Source {
	return &frames{gen: gen, prefix: prefix, left: count}
}

func (f *frames) Next() (Message, error) {
	if f.left <= 0 {
		return Message{}, io.EOF
	}
	f.left--
	fr := f.gen.Next()
	data, err := json.Marshal(fr)
	if err != nil {
		return Message{}, fmt.Errorf("encode frame: %w", err)
	}
	return Message{Subject: fr.Subject(f.prefix), ID: fr.MsgID(), Data: data}, nil
}

type ndjson struct {
	sc      *bufio.Scanner
	subject string
	idField string
	line    int
}

// NDJSON yields one message per non-empty line of r, on subject. The message id is
// the value of the top-level field idField, or, when idField is empty, a hash of
// the line, so replaying a file twice stores each line once.
func NDJSON(r io.Reader, subject, idField string) Source {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	return &ndjson{sc: sc, subject: subject, idField: idField}
}

func (n *ndjson) Next() (Message, error) {
	for n.sc.Scan() {
		n.line++
		line := n.sc.Bytes()
		if len(line) == 0 {
			continue
		}
		data := append([]byte(nil), line...)
		id, err := n.id(data)
		if err != nil {
			return Message{}, fmt.Errorf("line %d: %w", n.line, err)
		}
		return Message{Subject: n.subject, ID: id, Data: data}, nil
	}
	if err := n.sc.Err(); err != nil {
		return Message{}, fmt.Errorf("read line %d: %w", n.line+1, err)
	}
	return Message{}, io.EOF
}

func (n *ndjson) id(line []byte) (string, error) {
	if n.idField == "" {
		sum := sha256.Sum256(line)
		return "sha256-" + hex.EncodeToString(sum[:16]), nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return "", fmt.Errorf("not a JSON object, so it has no field %q: %w", n.idField, err)
	}
	raw, ok := fields[n.idField]
	if !ok {
		return "", fmt.Errorf("no field %q for the message id", n.idField)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	return string(raw), nil // a number or other scalar, as written
}

// Options tune Run.
type Options struct {
	Rate   float64 // messages per second; 0 for as fast as the stream acknowledges
	Window int     // most messages awaiting acknowledgement at once
}

// Run publishes every message of src and returns how many the stream stored and
// how many it dropped as duplicates of an id it already had. progress is called once
// per acknowledged message. It stops at the first failure. js must allow at least
// opts.Window pending asynchronous publishes (jetstream.WithPublishAsyncMaxPending).
func Run(ctx context.Context, js jetstream.JetStream, src Source, opts Options, progress func()) (stored, duplicates int, err error) {
	var limiter *rate.Limiter
	if opts.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(opts.Rate), max(1, int(opts.Rate/10)))
	}
	// A slot is taken before each publish and given back once its acknowledgement
	// is handled, so no more than opts.Window publishes are ever outstanding in
	// the client, which refuses more than its own limit.
	slots := make(chan struct{}, max(opts.Window, 1))
	window := make(chan jetstream.PubAckFuture, cap(slots))
	acked := make(chan error, 1)
	failed := make(chan struct{}) // closed when a message was not stored
	go func() {
		// Acknowledgements arrive in order; a full window blocks publishing, which
		// keeps the publisher's memory and the stream's backlog of pending acks flat.
		for f := range window {
			select {
			case ack := <-f.Ok():
				if ack.Duplicate {
					duplicates++
				} else {
					stored++
				}
				<-slots
				progress()
			case err := <-f.Err():
				acked <- fmt.Errorf("message %q on %s not stored: %w", f.Msg().Header.Get(jetstream.MsgIDHeader), f.Msg().Subject, err)
				close(failed)
				for range window { // until the publishing side has seen failed
				}
				return
			}
		}
		acked <- nil
	}()

	var pubErr error
	for {
		m, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			pubErr = err
			break
		}
		if limiter != nil {
			if pubErr = limiter.Wait(ctx); pubErr != nil {
				break
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			pubErr = ctx.Err()
		case <-failed:
		}
		if pubErr != nil || isClosed(failed) {
			break
		}
		var popts []jetstream.PublishOpt
		if m.ID != "" {
			popts = append(popts, jetstream.WithMsgID(m.ID))
		}
		f, err := js.PublishAsync(m.Subject, m.Data, popts...)
		if err != nil {
			pubErr = fmt.Errorf("publish on %s: %w", m.Subject, err)
			break
		}
		window <- f // never blocks: slots bound what is in the window
	}
	close(window)
	ackErr := <-acked
	return stored, duplicates, errors.Join(pubErr, ackErr)
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
