package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// format is one response encoding of a document stream. Documents are written as
// the raw _source bytes Elasticsearch returned: never decoded and encoded again.
type format struct {
	contentType string
	begin       func(w *bufio.Writer)
	doc         func(w *bufio.Writer, n int, doc []byte) // n: documents written before this one
	end         func(w *bufio.Writer, count int)
	// fail writes a last record saying the stream broke off. nil for encodings that
	// cannot carry one (a JSON array), where only the truncated body tells.
	fail func(w *bufio.Writer, e apiError)
}

var (
	jsonArray = format{
		contentType: "application/json",
		begin:       func(w *bufio.Writer) { w.WriteByte('[') },
		doc: func(w *bufio.Writer, n int, doc []byte) {
			if n > 0 {
				w.WriteByte(',')
			}
			w.Write(doc)
		},
		end: func(w *bufio.Writer, _ int) { w.WriteString("]\n") },
	}

	ndjson = format{
		contentType: "application/x-ndjson",
		begin:       func(*bufio.Writer) {},
		doc: func(w *bufio.Writer, _ int, doc []byte) {
			w.Write(oneLine(doc))
			w.WriteByte('\n')
		},
		end: func(*bufio.Writer, int) {},
		fail: func(w *bufio.Writer, e apiError) {
			json.NewEncoder(w).Encode(errorBody{Error: e}) // Encode ends the line
		},
	}

	// serverSentEvents sends each document as an unnamed event (EventSource's
	// "message"), then an "end" event with the count, or an "error" event.
	serverSentEvents = format{
		contentType: "text/event-stream",
		begin:       func(*bufio.Writer) {},
		doc: func(w *bufio.Writer, _ int, doc []byte) {
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

// streamDocuments serves the documents of [start_date, end_date) page by page,
// flushing after each page so that a client sees the first documents at once.
// pick chooses the encoding for the request.
func streamDocuments(rules rangeRules, stall time.Duration, st Exporter, m *Metrics, pick func(*http.Request) format) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		info := requestInfoFrom(r.Context())
		rng, bad := parseQuery(r.URL.Query(), rules)
		if bad != nil {
			writeError(w, http.StatusBadRequest, *bad)
			return
		}
		f := pick(r)

		rc := http.NewResponseController(w)
		bw := bufio.NewWriterSize(w, 64<<10)
		started, count := false, 0
		start := func() {
			started = true
			h := w.Header()
			h.Set("Content-Type", f.contentType)
			h.Set("Cache-Control", "no-store")
			if f.contentType != jsonArray.contentType {
				h.Add("Vary", "Accept") // /getStream answers NDJSON or SSE by it
			}
			if f.contentType == serverSentEvents.contentType {
				// Ask nginx-like proxies not to hold events back in a buffer.
				h.Set("X-Accel-Buffering", "no")
			}
			w.WriteHeader(http.StatusOK)
			f.begin(bw)
		}
		// flush sends what is buffered, giving a client that reads nothing at most
		// stall to make room, so an abandoned connection cannot hold an Elasticsearch
		// point in time open. http.ErrNotSupported (no deadline on this connection)
		// leaves only disconnection to end such a stream.
		flush := func() error {
			_ = rc.SetWriteDeadline(time.Now().Add(stall))
			if err := bw.Flush(); err != nil {
				return clientError{err}
			}
			if err := rc.Flush(); err != nil {
				return clientError{err}
			}
			return nil
		}

		err := st.Export(r.Context(), rng, func(page pipeline.Page) error {
			if !started {
				start()
			}
			for _, doc := range page {
				f.doc(bw, count, doc)
				count++
			}
			info.documents = count
			m.documents.WithLabelValues(routeOf(r)).Add(float64(len(page)))
			return flush()
		})

		switch {
		case err == nil:
			if !started {
				start()
			}
			f.end(bw, count)
			if err := flush(); err != nil {
				info.err = err
				panic(http.ErrAbortHandler)
			}
			// The connection may serve further requests, which must not inherit this
			// stream's deadline.
			_ = rc.SetWriteDeadline(time.Time{})

		case !started:
			info.err = err
			if r.Context().Err() != nil {
				return // the client left before the first document: nobody to answer
			}
			var t interface{ Temporary() bool }
			if errors.As(err, &t) && !t.Temporary() {
				writeError(w, http.StatusBadGateway, apiError{Code: "elasticsearch_error",
					Message: "the document store rejected the query; this is a fault of the backend, not of the request"})
				return
			}
			unavailable(w, apiError{Code: "elasticsearch_unavailable", Message: "the document store is not available; try again shortly"})

		default:
			// Headers and documents are out: the only honest signal left is a body
			// that does not end well-formed, after a final error record where the
			// encoding has one.
			info.err = err
			var ce clientError
			if f.fail != nil && !errors.As(err, &ce) && r.Context().Err() == nil {
				f.fail(bw, apiError{Code: "stream_interrupted",
					Message: fmt.Sprintf("the document store failed after %d documents; the response is incomplete", count)})
				_ = flush()
			}
			panic(http.ErrAbortHandler)
		}
	}
}
