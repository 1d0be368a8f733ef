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
}

// Document is a message ready for indexing.
type Document struct {
	ID        string
	Timestamp time.Time
	Body      []byte
}

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
	if !json.Valid(raw) {
		return Document{}, &pipeline.RejectError{Reason: pipeline.ReasonInvalidJSON, Detail: "message is not valid JSON"}
	}
	if n := len(src.MsgID); n > maxIDBytes || !utf8.ValidString(src.MsgID) {
		return Document{}, &pipeline.RejectError{Reason: pipeline.ReasonBadMsgID,
			Detail: fmt.Sprintf("Nats-Msg-Id of %d bytes cannot be a document id: Elasticsearch takes valid UTF-8 of at most %d bytes", n, maxIDBytes)}
	}
	if !utf8.Valid(raw) { // encoding/json lets it pass; Elasticsearch would not
		return Document{}, &pipeline.RejectError{Reason: pipeline.ReasonInvalidJSON, Detail: "message is not valid UTF-8"}
	}
	if bytes.IndexByte(raw, '\n') >= 0 || bytes.IndexByte(raw, '\r') >= 0 {
		// A bulk request holds one document per line: a pretty-printed message
		// would break the framing of the whole batch. In valid JSON a line break
		// can only be whitespace between tokens, so compacting loses nothing.
		var compact bytes.Buffer
		json.Compact(&compact, raw) // valid JSON: cannot fail
		raw = compact.Bytes()
	}
	if len(raw) == 0 || raw[0] != '{' {
		return Document{}, &pipeline.RejectError{Reason: pipeline.ReasonNotObject, Detail: "message is JSON but not an object"}
	}
	var f fields
	topLevel(raw, func(key, value []byte) bool {
		f.count++
		switch string(key) { // compared without allocating
		case TimestampKey:
			f.own = value
		case opts.TimestampField:
			f.named = value
		case OriginKey:
			f.origin = true
		}
		return true
	})
	if f.origin {
		return Document{}, &pipeline.RejectError{Reason: pipeline.ReasonReserved, Detail: "message has a field " + OriginKey + ", which the pipeline reserves for the document's origin"}
	}

	ts, own, err := f.eventTime(opts)
	if err != nil {
		if opts.Required {
			return Document{}, &pipeline.RejectError{Reason: pipeline.ReasonNoTimestamp, Detail: err.Error()}
		}
		ts = src.Published.UTC()
	}

	body := make([]byte, 0, len(raw)+160)
	body = append(body, raw[:len(raw)-1]...) // drop the closing brace
	if f.count > 0 {
		body = append(body, ',')
	}
	if !own {
		body = append(body, `"`+TimestampKey+`":"`...)
		body = ts.AppendFormat(body, time.RFC3339Nano)
		body = append(body, `",`...)
	}
	body = append(body, `"`+OriginKey+`":{"subject":`...)
	body = appendJSONString(body, src.Subject)
	body = append(body, `,"stream":`...)
	body = appendJSONString(body, src.Stream)
	body = append(body, `,"seq":`...)
	body = strconv.AppendUint(body, src.Sequence, 10)
	body = append(body, `,"published":"`...)
	body = src.Published.UTC().AppendFormat(body, time.RFC3339Nano)
	body = append(body, `"}}`...)

	return Document{ID: ID(src), Timestamp: ts, Body: body}, nil
}

// appendJSONString appends s as a JSON string. (strconv.AppendQuote writes Go escapes
// such as \x01, which are not JSON.)
func appendJSONString(dst []byte, s string) []byte {
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

var errNoTimestamp = errors.New("message has no timestamp field")

// fields are what Build needs to know of a message's top-level members. If a key
// repeats, the last one counts, as in Elasticsearch.
type fields struct {
	count  int
	own    []byte // the message's own @timestamp
	named  []byte // the configured timestamp field
	origin bool   // the message has an @nats field
}

// eventTime finds the event time: the message's own @timestamp if it has one,
// else the configured field. own reports that @timestamp was already present; it is
// then left as the producer wrote it (a second key would make the JSON ambiguous),
// and if it is unusable Elasticsearch's mapping rejects the document.
func (f fields) eventTime(opts Options) (t time.Time, own bool, err error) {
	if f.own != nil {
		t, err := parseValue(f.own, opts.DefaultZone)
		return t, true, err
	}
	if f.named == nil {
		return time.Time{}, false, errNoTimestamp
	}
	t, err = parseValue(f.named, opts.DefaultZone)
	return t, false, err
}

// parseValue reads a JSON string as a date-time, or a JSON number as epoch seconds
// or milliseconds.
func parseValue(v []byte, zone *time.Location) (time.Time, error) {
	if len(v) > 0 && v[0] == '"' {
		s := string(v[1 : len(v)-1])
		if bytes.IndexByte(v, '\\') >= 0 {
			if err := json.Unmarshal(v, &s); err != nil {
				return time.Time{}, err
			}
		}
		return datetime.Parse(s, zone)
	}
	n, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %s is neither a date-time string nor an epoch number", v)
	}
	return datetime.FromEpoch(n)
}
