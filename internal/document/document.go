// Package document turns a raw message into the document stored in Elasticsearch:
// the message's own JSON object with its event time as @timestamp and a small
// record of where it came from, spliced into the original bytes.
package document

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/annotated-data/pipeline/internal/datetime"
	"github.com/annotated-data/pipeline/internal/pipeline"
)

// TimestampKey is the field every stored document is ordered and queried by.
const TimestampKey = "@timestamp"

// Source says where a message came from in JetStream.
type Source struct {
	Subject   string
	Stream    string
	Sequence  uint64
	Published time.Time
	MsgID     string // the Nats-Msg-Id header, if any
}

// Options control how the event time is found.
type Options struct {
	TimestampField string         // message field with the event time
	DefaultZone    *time.Location // zone for timestamps written without one
	// Required rejects a message without a usable event time instead of storing it
	// under its publish time.
	Required bool
	// The accepted window of event times, relative to the publish time (0: no
	// bound). An event time outside it is not usable: each distinct day of event
	// time makes a daily index, so one producer with a broken clock could
	// otherwise create thousands of them.
	MaxPast, MaxFuture time.Duration
}

// Document is a message ready for indexing.
type Document struct {
	ID string
	// Timestamp is the event time, normalised: in UTC, to the millisecond that
	// Elasticsearch's date type keeps. It chooses the index, and the body's
	// @timestamp holds it in canonical form.
	Timestamp time.Time
	Body      []byte
	// Fallback says why the publish time stands in for the message's own event
	// time; "" when the message's own was used.
	Fallback TimestampProblem
}

// TimestampProblem says why a message's own timestamp could not be used.
type TimestampProblem string

// Timestamp problems, the values of the fallback metric's reason label.
const (
	TimestampMissing    TimestampProblem = "missing"      // neither @timestamp nor the configured field
	TimestampNull       TimestampProblem = "null"         // present, but null
	TimestampNotADate   TimestampProblem = "not_a_date"   // a string that is no date-time, or a value of another type
	TimestampOutOfRange TimestampProblem = "out_of_range" // a date or epoch outside the accepted window, or the years 0000-9999
)

// OriginalTimestampKey keeps a producer's own @timestamp wherever the pipeline
// writes another one (the producer's was not in canonical form, or could not be
// read), so that nothing the producer sent is lost.
const OriginalTimestampKey = "@timestamp_original"

// maxIDBytes is Elasticsearch's limit on a document id. A longer one fails the
// validation of the whole bulk request, not just its own item.
const maxIDBytes = 512

// OriginKey is the field that records where a document came from.
const OriginKey = "@nats"

// ID derives the document id: the publisher's Nats-Msg-Id when it gave one (so a
// message published twice is stored once), else the stream position, which is
// stable across redeliveries.
func ID(src Source) string {
	if src.MsgID != "" {
		return src.MsgID
	}
	return src.Stream + "-" + strconv.FormatUint(src.Sequence, 10)
}

// Build validates raw and returns the document to store. A message without a usable
// event time is stored under its publish time, or rejected if opts.Required.
func Build(raw []byte, src Source, opts Options) (Document, error) {
	raw = bytes.Trim(raw, " \t\r\n") // JSON's whitespace, and only that
	if bytes.IndexByte(raw, '\n') >= 0 || bytes.IndexByte(raw, '\r') >= 0 {
		// A bulk request holds one document per line: a pretty-printed message
		// would break the framing of the whole batch. In valid JSON a line break
		// can only be whitespace between tokens, so compacting loses nothing.
		var compact bytes.Buffer
		if json.Compact(&compact, raw) == nil {
			raw = compact.Bytes()
		} // else invalid, as the scan below finds
	}
	// One walk validates the message and finds the members Build reads.
	var f fields
	ok := topLevel(raw, func(key, value []byte, start, end int) {
		switch string(key) { // compared without allocating
		case TimestampKey:
			f.own = value
			f.ownExtents = append(f.ownExtents, [2]int{start, end})
		case opts.TimestampField:
			f.named = value
		case OriginKey, OriginalTimestampKey, AsideKey:
			f.reserved = string(key)
		}
	})
	if !ok {
		return Document{}, &pipeline.RejectError{Reason: pipeline.ReasonInvalidJSON, Detail: "message is not valid JSON"}
	}
	if n := len(src.MsgID); n > maxIDBytes || !utf8.ValidString(src.MsgID) {
		return Document{}, &pipeline.RejectError{Reason: pipeline.ReasonBadMsgID,
			Detail: fmt.Sprintf("Nats-Msg-Id of %d bytes cannot be a document id: Elasticsearch takes valid UTF-8 of at most %d bytes", n, maxIDBytes)}
	}
	if !utf8.Valid(raw) { // encoding/json lets it pass; Elasticsearch would not
		return Document{}, &pipeline.RejectError{Reason: pipeline.ReasonInvalidJSON, Detail: "message is not valid UTF-8"}
	}
	if raw[0] != '{' {
		return Document{}, &pipeline.RejectError{Reason: pipeline.ReasonNotObject, Detail: "message is JSON but not an object"}
	}
	if f.reserved != "" {
		return Document{}, &pipeline.RejectError{Reason: pipeline.ReasonReserved, Detail: "message has a field " + f.reserved + ", which the pipeline reserves (" + OriginKey + ": the document's origin; " + OriginalTimestampKey + ": a producer's own @timestamp that was rewritten; " + AsideKey + ": members the index's mapping could not take)"}
	}

	ts, problem, err := f.eventTime(opts, src.Published)
	if err != nil {
		if opts.Required {
			reason := pipeline.ReasonNoTimestamp
			if problem == TimestampOutOfRange {
				reason = pipeline.ReasonTimestampOutOfRange
			}
			return Document{}, &pipeline.RejectError{Reason: reason, Detail: err.Error()}
		}
		ts = src.Published
	}
	ts = ts.UTC().Truncate(time.Millisecond)

	// @timestamp is always the instant that chose the index, in one form. A
	// producer's own that differs from it is moved aside, not lost.
	var canonical [40]byte
	stamp := append(canonical[:0], '"')
	stamp = append(ts.AppendFormat(stamp, time.RFC3339Nano), '"')
	var original []byte
	if f.ownExtents != nil {
		if len(f.ownExtents) == 1 && bytes.Equal(f.own, stamp) {
			stamp = nil // already as it would be written: kept where it is
		} else {
			original = f.own
			raw = withoutMembers(raw, f.ownExtents)
		}
	}

	body := make([]byte, 0, len(raw)+len(original)+200)
	body = append(body, raw[:len(raw)-1]...) // drop the closing brace
	if !bytes.Equal(bytes.TrimRight(body, " \t"), []byte("{")) {
		body = append(body, ',')
	}
	if stamp != nil {
		body = append(body, `"`+TimestampKey+`":`...)
		body = append(body, stamp...)
		body = append(body, ',')
	}
	if original != nil {
		body = append(body, `"`+OriginalTimestampKey+`":`...)
		body = append(body, original...)
		body = append(body, ',')
	}
	body = append(body, `"`+OriginKey+`":{"subject":`...)
	body = AppendJSONString(body, src.Subject)
	body = append(body, `,"stream":`...)
	body = AppendJSONString(body, src.Stream)
	body = append(body, `,"seq":`...)
	body = strconv.AppendUint(body, src.Sequence, 10)
	body = append(body, `,"published":"`...)
	body = src.Published.UTC().AppendFormat(body, time.RFC3339Nano)
	body = append(body, `"}}`...)

	return Document{ID: ID(src), Timestamp: ts, Body: body, Fallback: problem}, nil
}

// AppendJSONString appends s as a JSON string, as encoding/json writes it, without
// an allocation for the common string that needs no escape. (strconv.AppendQuote
// writes Go escapes such as \x01, which are not JSON.)
func AppendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			quoted, _ := json.Marshal(s) // a string always encodes
			return append(dst, quoted...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// fields are what Build needs to know of a message's top-level members. If a key
// repeats, the last one counts, as in Elasticsearch.
type fields struct {
	own        []byte   // the message's own @timestamp
	ownExtents [][2]int // where each @timestamp member is in the message
	named      []byte   // the configured timestamp field
	reserved   string   // a field the pipeline writes itself, if the message has one
}

// eventTime finds the event time: the message's own @timestamp if it can be read,
// else the configured field's. A value that cannot be read, or lies outside the
// window around published, counts as missing. When neither gives a time, problem
// says why (of @timestamp, if it was there).
func (f fields) eventTime(opts Options, published time.Time) (t time.Time, problem TimestampProblem, err error) {
	if f.own == nil && f.named == nil {
		return time.Time{}, TimestampMissing, errors.New("message has neither " + TimestampKey + " nor " + opts.TimestampField)
	}
	var firstErr error
	for _, v := range [][]byte{f.own, f.named} {
		if v == nil {
			continue
		}
		t, p, err := parseValue(v, opts.DefaultZone)
		if err == nil {
			if err = opts.outsideWindow(t, published); err == nil {
				return t, "", nil
			}
			p = TimestampOutOfRange
		}
		if firstErr == nil {
			problem, firstErr = p, err
		}
	}
	return time.Time{}, problem, firstErr
}

// outsideWindow says how t lies outside the event times accepted for a message
// published at published; nil if it does not.
func (o Options) outsideWindow(t, published time.Time) error {
	if o.MaxPast > 0 && t.Before(published.Add(-o.MaxPast)) {
		return fmt.Errorf("timestamp %s is more than %s before the message was published (%s)",
			t.Format(time.RFC3339Nano), span(o.MaxPast), published.UTC().Format(time.RFC3339Nano))
	}
	if o.MaxFuture > 0 && t.After(published.Add(o.MaxFuture)) {
		return fmt.Errorf("timestamp %s is more than %s after the message was published (%s)",
			t.Format(time.RFC3339Nano), span(o.MaxFuture), published.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// span writes whole days as days, as the window is usually configured.
func span(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}

// parseValue reads a JSON string as a date-time, or as epoch seconds or
// milliseconds if it holds a decimal number, and a JSON number as epoch seconds
// or milliseconds; when it cannot, problem says why.
func parseValue(v []byte, zone *time.Location) (t time.Time, problem TimestampProblem, err error) {
	defer func() {
		var re *datetime.RangeError
		if errors.As(err, &re) {
			problem = TimestampOutOfRange
		}
	}()
	switch {
	case string(v) == "null":
		return time.Time{}, TimestampNull, errors.New("timestamp is null")
	case len(v) > 0 && v[0] == '"':
		s := string(v[1 : len(v)-1])
		if bytes.IndexByte(v, '\\') >= 0 {
			if err := json.Unmarshal(v, &s); err != nil {
				return time.Time{}, TimestampNotADate, err
			}
		}
		if t, ok, err := datetime.Epoch(s); ok {
			return t, TimestampNotADate, err
		}
		t, err := datetime.Parse(s, zone)
		return t, TimestampNotADate, err
	}
	n, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return time.Time{}, TimestampNotADate, fmt.Errorf("timestamp %.40s is neither a date-time string nor an epoch number", v)
	}
	t, err = datetime.FromEpoch(n)
	return t, TimestampNotADate, err
}
