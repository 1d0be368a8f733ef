package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/query"
)

// format is one response encoding of a document stream. Documents are written as
// the raw _source bytes Elasticsearch returned: never decoded and encoded again.
type format struct {
	contentType string
	begin       func(w *bufio.Writer)
	// doc writes one document; n: documents written before it; id: its cursor,
	// or "" where the stream has none.
	doc func(w *bufio.Writer, n int, doc []byte, id string)
	end func(w *bufio.Writer, count int)
	// fail writes a last record saying the stream broke off. nil for encodings that
	// cannot carry one (a JSON array), where only the truncated body tells.
	fail func(w *bufio.Writer, e apiError)
	// position records that everything up to cursor c has been sent, without a
	// document: when a follow turns live (live is true), and as an idle
	// stream's keep-alive. nil for encodings that cannot follow.
	position func(w *bufio.Writer, c string, count int, live bool)
	// docCursors: each document carries its cursor (SSE's event id), so a busy
	// follow needs no position records; NDJSON's lines do not.
	docCursors bool
	// note writes a remark for people reading the stream (what q could not
	// show), which clients skip. nil for encodings without comments.
	note func(w *bufio.Writer, text string)
}

var (
	jsonArray = format{
		contentType: "application/json",
		begin:       func(w *bufio.Writer) { w.WriteByte('[') },
		doc: func(w *bufio.Writer, n int, doc []byte, _ string) {
			if n > 0 {
				w.WriteByte(',')
			}
			w.Write(doc)
		},
		end: func(w *bufio.Writer, _ int) { w.WriteString("]\n") },
	}

	// ndjson writes a document per line. A stream that can be resumed (a follow,
	// or one resumed with after=) also writes {"cursor":"…"} records: each says
	// that every document line before it is covered by that cursor. A follow
	// writes one every heartbeat, busy or idle.
	ndjson = format{
		contentType: "application/x-ndjson",
		begin:       func(*bufio.Writer) {},
		doc: func(w *bufio.Writer, _ int, doc []byte, _ string) {
			w.Write(oneLine(doc))
			w.WriteByte('\n')
		},
		end: func(*bufio.Writer, int) {},
		fail: func(w *bufio.Writer, e apiError) {
			json.NewEncoder(w).Encode(errorBody{Error: e}) // Encode ends the line
		},
		position: func(w *bufio.Writer, c string, _ int, _ bool) {
			w.WriteString(`{"cursor":"`) // cursors are base64url: nothing to escape
			w.WriteString(c)
			w.WriteString("\"}\n")
		},
	}

	// serverSentEvents sends each document as an unnamed event (EventSource's
	// "message") with its cursor as the event id, then an "end" event with the
	// count, or an "error" event. A follow sends a "live" event when its history
	// is done, and keep-alives: a comment with the position as a bare id, which
	// moves EventSource's Last-Event-ID on without firing an event.
	serverSentEvents = format{
		contentType: "text/event-stream",
		docCursors:  true,
		begin:       func(*bufio.Writer) {},
		doc: func(w *bufio.Writer, _ int, doc []byte, id string) {
			if id != "" {
				w.WriteString("id: ")
				w.WriteString(id)
				w.WriteByte('\n')
			}
			w.WriteString("data: ")
			w.Write(oneLine(doc))
			w.WriteString("\n\n")
		},
		end: func(w *bufio.Writer, count int) {
			w.WriteString(`event: end` + "\n" + `data: {"documents":`)
			w.WriteString(strconv.Itoa(count))
			w.WriteString("}\n\n")
		},
		fail: func(w *bufio.Writer, e apiError) {
			body, _ := json.Marshal(errorBody{Error: e})
			w.WriteString("event: error\ndata: ")
			w.Write(body)
			w.WriteString("\n\n")
		},
		position: func(w *bufio.Writer, c string, count int, live bool) {
			if live {
				w.WriteString("event: live\nid: " + c + "\n" + `data: {"documents":` + strconv.Itoa(count) + "}\n\n")
				return
			}
			w.WriteString(": keep-alive\nid: " + c + "\n\n")
		},
		note: func(w *bufio.Writer, text string) {
			w.WriteString(": " + strings.NewReplacer("\n", " ", "\r", " ").Replace(text) + "\n\n")
		},
	}
)

// oneLine returns doc without line breaks, for encodings where a line break ends a
// record. A producer may have published pretty-printed JSON; compacting removes only
// white space between tokens, since a JSON string cannot hold a raw line break.
func oneLine(doc []byte) []byte {
	if bytes.IndexByte(doc, '\n') < 0 && bytes.IndexByte(doc, '\r') < 0 {
		return doc
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, doc); err != nil {
		// Elasticsearch only stores valid JSON; should that ever not hold, a line
		// break still must not split the record.
		return bytes.ReplaceAll(bytes.ReplaceAll(doc, []byte("\n"), []byte(" ")), []byte("\r"), []byte(" "))
	}
	return buf.Bytes()
}

// wantsEventStream reports whether the client asked for Server-Sent Events, as
// EventSource does with "Accept: text/event-stream".
func wantsEventStream(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mediaType, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && mediaType == "text/event-stream" && params["q"] != "0" {
			return true
		}
	}
	return false
}

// clientError is a failure to deliver to the client (gone away, or stalled): there
// is nobody left to tell about it.
type clientError struct{ err error }

func (e clientError) Error() string { return "write to client: " + e.err.Error() }
func (e clientError) Unwrap() error { return e.err }

// streamer serves the document endpoints.
type streamer struct {
	rules   rangeRules
	st      Exporter
	m       *Metrics
	cursors cursors
	follow  *following // nil without NATS: follow=true is refused
}

// serve streams the documents of [start_date, end_date) page by page, flushing
// after each page so that a client sees the first documents at once, and with
// follow=true goes on with the live ones. pick chooses the encoding.
func (s *streamer) serve(pick func(*http.Request) format) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, ok := readQuery(w, r)
		if !ok {
			return
		}
		req, bad := parseQuery(q, s.rules)
		if bad == nil {
			bad = s.check(&req, r, pick(r))
		}
		if bad != nil {
			writeError(w, http.StatusBadRequest, *bad)
			return
		}
		f, bad, err := readFilter(r.Context(), s.st, req.expr, s.rules.defaultZone)
		if bad != nil {
			writeError(w, http.StatusBadRequest, *bad)
			return
		}
		sw := newStreamWriter(w, pick(r))
		if err != nil {
			requestInfoFrom(r.Context()).err = err
			sw.fail(r, err)
			return
		}
		if f.query != nil {
			req.Filter = f.query
		}
		f.tell(w.Header())
		sw.notes = f.notes
		var resume *cursor
		if req.after != "" {
			c, err := s.cursors.decode(req, req.after)
			if err != nil {
				writeError(w, http.StatusBadRequest, apiError{Code: "invalid_cursor", Param: req.afterParam, Message: req.afterParam + " " + err.Error()})
				return
			}
			resume = &c
		}
		if req.follow {
			if s.follow == nil {
				writeError(w, http.StatusNotImplemented, apiError{Code: "follow_unavailable", Param: "follow",
					Message: "this backend cannot follow: it is not connected to NATS (NATS_URL)"})
				return
			}
			release, ok := s.follow.acquire(w)
			if !ok {
				return
			}
			defer release()
		}

		if r.Method == http.MethodHead {
			// The headers a GET would begin with, without asking the store for
			// documents that would not be sent.
			sw.begin()
			return
		}
		info, counted := requestInfoFrom(r.Context()), s.m.documents.WithLabelValues(routeOf(r))
		sent := func(p pipeline.Page) {
			info.documents = sw.count
			counted.Add(float64(len(p.Docs)))
		}
		if req.follow {
			err = s.follow.stream(r.Context(), sw, req, resume, s.history, sent)
		} else {
			err = s.history(r.Context(), sw, req, resume, nil, sent)
			if err == nil {
				err = sw.finish()
			}
		}
		if err != nil {
			info.err = err
			sw.fail(r, err)
		}
	}
}

// check refuses what the chosen encoding cannot do, and takes a cursor from
// Last-Event-ID (which EventSource sends when it reconnects, with the original
// URL: so it wins over after=).
func (s *streamer) check(req *request, r *http.Request, f format) *apiError {
	req.afterParam = "after"
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		req.after, req.afterParam = id, "Last-Event-ID"
	}
	if f.position == nil && (req.follow || req.after != "") {
		param := "follow"
		if !req.follow {
			param = "after"
		}
		return &apiError{Code: "invalid_parameter", Param: param,
			Message: param + " needs a stream that can carry cursors: use /getStream (NDJSON, or SSE with Accept: text/event-stream)"}
	}
	// Cursors cost a sort on @nats.seq: only streams that hand them out pay it.
	req.Keys = f.contentType == serverSentEvents.contentType || req.follow || req.after != ""
	return nil
}

// history streams the stored documents of req, after resume when given, and
// with a floor only those up to that sequence (a follow's history).
func (s *streamer) history(ctx context.Context, sw *streamWriter, req request, resume *cursor, floor *uint64, sent func(pipeline.Page)) error {
	rng := req.Range
	rng.UpTo = floor
	if resume != nil {
		rng.After = &resume.key
	}
	var id func(pipeline.Page) func(int) string
	if rng.Keys {
		id = func(p pipeline.Page) func(int) string {
			return func(i int) string {
				c := cursor{key: p.Keys[i]}
				if floor != nil {
					c.floor = *floor
				}
				return s.cursors.encode(req, c)
			}
		}
	}
	return s.st.Export(ctx, rng, func(p pipeline.Page) error {
		var ids func(int) string
		if id != nil {
			ids = id(p)
		}
		err := sw.page(p, ids)
		sent(p)
		return err
	})
}

// rejected reports whether the store answered err with a refusal that retrying
// cannot fix (an error response with a status, such as 400), as opposed to not
// answering at all. A lost connection's *net.OpError also has a Temporary
// method, which says false for a reset: the status tells the two apart.
func rejected(err error) bool {
	var answer interface {
		Temporary() bool
		StatusCode() int
	}
	return errors.As(err, &answer) && !answer.Temporary()
}

// streamWriter writes one document stream in one encoding: begin sends the status,
// headers and the encoding's opening; page the documents of one page, flushed;
// finish the closing record; fail whatever can still be said of a failure. How
// long a write may wait for the client is the stream slot's meter's to say.
type streamWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	bw      *bufio.Writer
	f       format
	started bool
	count   int         // documents written
	notes   query.Notes // said at the beginning, where the encoding can
}

func newStreamWriter(w http.ResponseWriter, f format) *streamWriter {
	return &streamWriter{w: w, rc: http.NewResponseController(w), f: f, bw: bufio.NewWriterSize(w, 64<<10)}
}

// begin sends the headers; the body's first bytes wait in the buffer.
func (s *streamWriter) begin() {
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", s.f.contentType)
	h.Set("Cache-Control", "no-store")
	if s.f.contentType != jsonArray.contentType {
		h.Add("Vary", "Accept") // /getStream answers NDJSON or SSE by it
	}
	if s.f.contentType == serverSentEvents.contentType {
		// Ask nginx-like proxies not to hold events back in a buffer.
		h.Set("X-Accel-Buffering", "no")
	}
	s.w.WriteHeader(http.StatusOK)
	s.f.begin(s.bw)
	if s.f.note != nil {
		if len(s.notes.Unknown) > 0 {
			s.f.note(s.bw, "unknown fields, which match nothing: "+strings.Join(s.notes.Unknown, ", "))
		}
		for _, w := range s.notes.Warnings {
			s.f.note(s.bw, "warning: "+w)
		}
	}
}

// page writes a page of documents and sends it; id, when not nil, gives each
// document's cursor.
func (s *streamWriter) page(p pipeline.Page, id func(i int) string) error {
	if !s.started {
		s.begin()
	}
	for i, doc := range p.Docs {
		var c string
		if id != nil {
			c = id(i)
		}
		s.f.doc(s.bw, s.count, doc, c)
		s.count++
	}
	return s.flush()
}

// position sends a position record (see format.position), where the encoding
// has them.
func (s *streamWriter) position(c string, live bool) error {
	if !s.started {
		s.begin()
	}
	if s.f.position == nil {
		return nil
	}
	s.f.position(s.bw, c, s.count, live)
	return s.flush()
}

// finish ends a stream whose range is exhausted.
func (s *streamWriter) finish() error {
	if !s.started {
		s.begin()
	}
	s.f.end(s.bw, s.count)
	return s.flush()
}

// flush sends what is buffered.
func (s *streamWriter) flush() error {
	if err := s.bw.Flush(); err != nil {
		return clientError{err}
	}
	if err := s.rc.Flush(); err != nil {
		return clientError{err}
	}
	return nil
}

// fail answers err: with an error response while nothing is sent yet; once
// headers and documents are out, the only honest signal left is a body that does
// not end well-formed, after a final error record where the encoding has one.
func (s *streamWriter) fail(r *http.Request, err error) {
	gone := r.Context().Err() != nil
	var f *failure
	isFailure := errors.As(err, &f)
	if !s.started {
		if !gone { // else the client left before the first document: nobody to answer
			answerFailure(s.w, err)
		}
		return
	}
	var ce clientError
	if s.f.fail != nil && !errors.As(err, &ce) && !gone {
		e := apiError{Code: "stream_interrupted",
			Message: fmt.Sprintf("the document store failed after %d documents; the response is incomplete", s.count)}
		if isFailure {
			e = f.apiError
		}
		s.f.fail(s.bw, e)
		_ = s.flush()
	}
	panic(http.ErrAbortHandler)
}
