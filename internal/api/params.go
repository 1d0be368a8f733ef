package api

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/annotated-data/pipeline/internal/datetime"
	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/query"
)

// queryParams are the parameters the document endpoints accept; anything else is
// an error, so that a misspelt "limt" is not silently ignored.
var queryParams = []string{"start_date", "end_date", "q", "limit", "order", "fields", "follow", "after"}

// openEnd stands for the end of a followed range that has no end_date.
var openEnd = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

// Bounds of the optional parameters.
const (
	maxLimit       = 1_000_000_000
	maxFields      = 64
	maxFieldLength = 256
)

// rangeRules are the settings that shape what a request may ask for.
type rangeRules struct {
	defaultZone *time.Location
	maxRange    time.Duration // 0: unlimited
	// pageSize is the most documents per page, firstPageSize the first page's.
	pageSize, firstPageSize int
	slices                  int // point-in-time slices read at once
}

// request is what a document request asks for.
type request struct {
	pipeline.Range
	follow bool        // follow=true: live documents after the history
	open   bool        // followed without an end_date: To is openEnd
	after  string      // a cursor to resume after
	q      string      // the filter as given, for cursors
	expr   *query.Expr // the filter as read; nil: every document
	// afterParam names where after came from: the after parameter, or the
	// Last-Event-ID header.
	afterParam string
}

// parseQuery turns the query string of a document request into a request, or
// into the error that names the first parameter at fault. Nothing from the request
// is ever placed into query text: dates become times, the rest typed values.
func parseQuery(q url.Values, rules rangeRules) (request, *apiError) {
	rng := request{Range: pipeline.Range{PageSize: rules.pageSize, FirstPageSize: rules.firstPageSize, Slices: rules.slices}}
	if bad := checkParams(q, queryParams); bad != nil {
		return rng, bad
	}
	if raw, ok := q["follow"]; ok {
		switch raw[0] {
		case "true":
			rng.follow = true
		case "false":
		default:
			return rng, &apiError{Code: "invalid_parameter", Param: "follow", Message: fmt.Sprintf("follow must be true or false, got %q", shorten(raw[0], maxEcho))}
		}
	}
	var bad *apiError
	if rng.From, rng.To, rng.open, bad = parseDates(q, rules, rng.follow); bad != nil {
		return rng, bad
	}
	if rng.q, rng.expr, bad = parseQ(q); bad != nil {
		return rng, bad
	}
	if raw, ok := q["limit"]; ok {
		n, err := strconv.Atoi(raw[0])
		if err != nil || n < 1 || n > maxLimit || !allDigits(raw[0]) {
			return rng, &apiError{Code: "invalid_parameter", Param: "limit",
				Message: fmt.Sprintf("limit must be a whole number from 1 to %d, got %q", maxLimit, raw[0])}
		}
		rng.Limit = n
	}
	if raw, ok := q["order"]; ok {
		switch raw[0] {
		case "asc":
			rng.Order = pipeline.Ascending
		case "desc":
			rng.Order = pipeline.Descending
		default:
			return rng, &apiError{Code: "invalid_parameter", Param: "order", Message: fmt.Sprintf("order must be asc or desc, got %q", raw[0])}
		}
	}
	if raw, ok := q["fields"]; ok {
		fields, err := parseFields(raw[0])
		if err != nil {
			return rng, &apiError{Code: "invalid_parameter", Param: "fields", Message: err.Error()}
		}
		rng.Fields = fields
	}
	if raw, ok := q["after"]; ok {
		if raw[0] == "" {
			return rng, &apiError{Code: "invalid_parameter", Param: "after", Message: "after must be a cursor: the id of the last event received"}
		}
		rng.after = raw[0]
	}
	return rng, nil
}

// parseDate reads a range bound: every form datetime.Parse accepts, plus one repair.
// A '+' in a query string means a space, so "…T20:40:00+01:00" pasted unencoded into
// a browser arrives as "…T20:40:00 01:00". A space is never part of a valid date, and
// the repaired text must still pass the strict parser, so nothing that was an error
// before can turn into a different date.
func parseDate(raw string, loc *time.Location) (time.Time, error) {
	t, err := datetime.Parse(raw, loc)
	if err == nil {
		return t, nil
	}
	if fixed, ok := restorePlus(raw); ok {
		if t, fixedErr := datetime.Parse(fixed, loc); fixedErr == nil {
			return t, nil
		}
	}
	if strings.Contains(raw, " ") {
		return time.Time{}, fmt.Errorf("%w (write a '+' in a URL as %%2B)", err)
	}
	return time.Time{}, err
}

// restorePlus turns "<date>T<time> HH:MM" back into "<date>T<time>+HH:MM".
func restorePlus(s string) (string, bool) {
	i := strings.IndexByte(s, ' ')
	if i < 0 || strings.Count(s, " ") != 1 || !strings.Contains(s[:i], "T") {
		return "", false
	}
	off := s[i+1:]
	if len(off) != 5 || off[2] != ':' || !allDigits(off[:2]) || !allDigits(off[3:]) {
		return "", false
	}
	return s[:i] + "+" + off, true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseFields reads a comma-separated list of _source field names. Names are
// limited to the characters field names in this pipeline use, and '*' for
// Elasticsearch's source-filtering wildcards; they travel as JSON strings.
func parseFields(raw string) ([]string, error) {
	fields := strings.Split(raw, ",")
	if len(fields) > maxFields {
		return nil, fmt.Errorf("fields names %d fields; at most %d may be asked for", len(fields), maxFields)
	}
	for _, f := range fields {
		if f == "" {
			return nil, fmt.Errorf("fields must be a comma-separated list of field names such as @timestamp,camera_id; got %q", raw)
		}
		if len(f) > maxFieldLength {
			return nil, fmt.Errorf("field name %.20q… is longer than %d characters", f, maxFieldLength)
		}
		for _, r := range f {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_@.-*:", r)) {
				return nil, fmt.Errorf("field name %q may hold only letters, digits and _ @ . - : * (a wildcard)", f)
			}
		}
	}
	return fields, nil
}

// checkParams refuses a parameter that is not among allowed, or given twice:
// a misspelt "limt" must not be silently ignored.
func checkParams(q url.Values, allowed []string) *apiError {
	// In name order, so that a request with several problems always gets the same answer.
	for _, name := range slices.Sorted(maps.Keys(q)) {
		if !slices.Contains(allowed, name) {
			name = shorten(name, maxEcho)
			return &apiError{Code: "unknown_parameter", Param: name,
				Message: fmt.Sprintf("unknown parameter %q; the parameters are %s", name, strings.Join(allowed, ", "))}
		}
		if len(q[name]) > 1 {
			return &apiError{Code: "invalid_parameter", Param: name, Message: name + " is given more than once"}
		}
	}
	return nil
}

// parseDates reads start_date and end_date: a range of at most the longest
// allowed, or with follow and no end_date, one open at the end (open is true,
// to is openEnd).
func parseDates(q url.Values, rules rangeRules, follow bool) (from, to time.Time, open bool, bad *apiError) {
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"start_date", &from}, {"end_date", &to}} {
		raw := q.Get(p.name)
		if raw == "" && p.name == "end_date" && follow && !q.Has("end_date") {
			to, open = openEnd, true
			continue
		}
		if raw == "" {
			return from, to, open, &apiError{Code: "missing_parameter", Param: p.name, Message: p.name + " is required, e.g. 2023-03-09T19:40:00"}
		}
		t, err := parseDate(raw, rules.defaultZone)
		if err != nil {
			return from, to, open, &apiError{Code: "invalid_parameter", Param: p.name, Message: err.Error()}
		}
		*p.dst = t
	}
	if from.After(to) {
		return from, to, open, &apiError{Code: "invalid_range", Param: "start_date", Message: "start_date is after end_date"}
	}
	if open {
		if history := time.Since(from); rules.maxRange > 0 && history > rules.maxRange {
			return from, to, open, &apiError{Code: "range_too_long", Param: "start_date",
				Message: fmt.Sprintf("start_date is %s ago; a followed range may begin at most %s ago", history.Round(time.Second), rules.maxRange)}
		}
	} else if length := to.Sub(from); rules.maxRange > 0 && length > rules.maxRange {
		return from, to, open, &apiError{Code: "range_too_long", Param: "end_date",
			Message: fmt.Sprintf("the range is %s long; at most %s may be asked for at once", length, rules.maxRange)}
	}
	return from, to, open, nil
}

// parseQ reads the filter q, if given: its syntax and limits. What its
// conditions mean depends on the mapping, which the handler asks for next.
func parseQ(q url.Values) (string, *query.Expr, *apiError) {
	raw := q.Get("q")
	expr, err := query.Parse(raw)
	if err != nil {
		return raw, nil, queryError(err)
	}
	return raw, expr, nil
}

// queryError is the answer to a q that cannot be read or cannot hold.
func queryError(err error) *apiError {
	e := &apiError{Code: "invalid_query", Param: "q", Message: err.Error()}
	var qe *query.Error
	if errors.As(err, &qe) {
		e.Position = qe.Pos
	}
	return e
}

// readQuery reads a request's query string, or answers why it cannot.
// r.URL.Query() would drop what it cannot read, and report a parameter written
// with a bad escape or after a ';' as missing.
func readQuery(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, apiError{Code: "invalid_query",
			Message: fmt.Sprintf("the query string cannot be read (%s): separate parameters with & and write a literal %% as %%25", shorten(err.Error(), maxEcho))})
		return nil, false
	}
	return q, true
}
