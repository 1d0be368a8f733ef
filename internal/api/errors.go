package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// apiError is the body of every error response: {"error":{...}}. Param names the
// query parameter at fault, when one is.
type apiError struct {
	Code    string `json:"code"`
	Param   string `json:"param,omitempty"`
	Message string `json:"message"`
	// Position is where in q the problem is, in characters from 1.
	Position int `json:"position,omitempty"`
}

// errorBody is how an apiError is written: in a response of its own, and as the last
// record of an NDJSON or SSE stream that failed.
type errorBody struct {
	Error apiError `json:"error"`
}

func writeError(w http.ResponseWriter, status int, e apiError) {
	writeJSON(w, status, errorBody{Error: e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// The status line is already out; a client that left is all an error could mean.
	_ = json.NewEncoder(w).Encode(v)
}

// unavailable is the answer while Elasticsearch cannot be reached, or the backend is
// too busy: the client should come back shortly.
func unavailable(w http.ResponseWriter, e apiError) {
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, e)
}

// slowStore answers err if the store gave up waiting for Elasticsearch, which
// is then slow rather than unreachable: a 504 with a code of its own, so that
// neither the client nor the operator goes looking for an outage.
func slowStore(w http.ResponseWriter, err error) bool {
	var slow interface{ TimedOut() time.Duration }
	if !errors.As(err, &slow) {
		return false
	}
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusGatewayTimeout, apiError{Code: "elasticsearch_timeout",
		Message: fmt.Sprintf("the document store is slow: it did not start the stream within %s; try again shortly", slow.TimedOut())})
	return true
}

// failure is an error a handler meets with its answer attached: the status
// while nothing is sent yet, the record that ends a stream after that.
type failure struct {
	status int
	apiError
	err error // the cause, for the log
}

func (f *failure) Error() string {
	if f.err != nil {
		return f.Message + ": " + f.err.Error()
	}
	return f.Message
}

func (f *failure) Unwrap() error { return f.err }

// answerFailure answers err, which met a request before its answer began: with
// the failure's own answer, or as the store's (slow, refusing, or down).
func answerFailure(w http.ResponseWriter, err error) {
	var f *failure
	switch {
	case errors.As(err, &f) && f.status == http.StatusServiceUnavailable:
		unavailable(w, f.apiError)
	case errors.As(err, &f):
		writeError(w, f.status, f.apiError)
	case slowStore(w, err):
	case rejected(err):
		writeError(w, http.StatusBadGateway, apiError{Code: "elasticsearch_error",
			Message: "the document store rejected the query; this is a fault of the backend, not of the request"})
	default:
		unavailable(w, apiError{Code: "elasticsearch_unavailable", Message: "the document store is not available; try again shortly"})
	}
}

// maxEcho is the most of a client's text (a parameter name, a path) that an
// error message or a log line repeats.
const maxEcho = 64

// shorten returns s cut to at most n bytes, without splitting a character, and
// marked as cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
