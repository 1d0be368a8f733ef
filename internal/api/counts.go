package api

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/query"
)

// countsParams are the parameters /getCounts accepts.
var countsParams = []string{"start_date", "end_date", "q", "interval", "buckets", "by", "top"}

// Bounds of /getCounts' parameters.
const (
	defaultBuckets = 100
	maxBuckets     = 2000
	defaultTop     = 10
	maxTop         = 50
	minInterval    = time.Second
	maxInterval    = 24 * time.Hour
	// maxSplitCounts bounds buckets × (top + 1) with by: Elasticsearch refuses
	// a search of more than 65,536 buckets (search.max_buckets).
	maxSplitCounts = 60_000
)

// roundIntervals are the intervals interval=auto picks from: the shortest that
// gives at most the buckets asked for.
var roundIntervals = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour,
	24 * time.Hour, 2 * 24 * time.Hour, 7 * 24 * time.Hour, 14 * 24 * time.Hour, 30 * 24 * time.Hour,
}

// countsRequest is what a /getCounts request asks for.
type countsRequest struct {
	pipeline.CountsRequest
	expr    *query.Expr
	buckets int // the most buckets asked for
}

// countsAnswer is /getCounts' answer.
type countsAnswer struct {
	StartDate     string         `json:"start_date"`
	EndDate       string         `json:"end_date"`
	Interval      string         `json:"interval"`
	Total         int64          `json:"total"`
	Buckets       []bucketAnswer `json:"buckets"`
	By            *byAnswer      `json:"by,omitempty"`
	UnknownFields []string       `json:"unknown_fields,omitempty"`
	Warnings      []string       `json:"warnings,omitempty"`
}

type bucketAnswer struct {
	Start string           `json:"start"`
	Count int64            `json:"count"`
	By    map[string]int64 `json:"by,omitempty"`
	// Other counts the bucket's documents under none of the values split out.
	Other *int64 `json:"other,omitempty"`
}

type byAnswer struct {
	Field  string        `json:"field"`
	Values []valueAnswer `json:"values"`
	Other  int64         `json:"other"`
}

type valueAnswer struct {
	Value string `json:"value"`
	Count int64  `json:"count"`
}

// counts serves /getCounts: how many documents of a range match q, per
// interval, in one small answer that a chart draws at once, whatever the range.
// It has no follow mode: a page that follows polls it.
func (s *streamer) counts(w http.ResponseWriter, r *http.Request) {
	q, ok := readQuery(w, r)
	if !ok {
		return
	}
	req, bad := parseCounts(q, s.rules)
	if bad != nil {
		writeError(w, http.StatusBadRequest, *bad)
		return
	}
	var also []string
	if req.By != "" {
		also = parents(req.By)
	}
	f, bad, err := readFilter(r.Context(), s.st, req.expr, s.rules.defaultZone, also...)
	if bad == nil && err == nil && req.By != "" {
		bad = f.splitBy(&req)
	}
	if bad != nil {
		writeError(w, http.StatusBadRequest, *bad)
		return
	}
	if err != nil {
		requestInfoFrom(r.Context()).err = err
		answerFailure(w, err)
		return
	}
	if f.query != nil {
		req.Filter = f.query
	}
	answer := countsAnswer{
		StartDate: req.From.UTC().Format(time.RFC3339Nano), EndDate: req.To.UTC().Format(time.RFC3339Nano),
		Interval: formatInterval(req.Interval), Buckets: []bucketAnswer{},
		UnknownFields: f.notes.Unknown, Warnings: f.notes.Warnings,
	}
	if req.From.Before(req.To) { // an empty range has no bucket to ask for
		counts, err := s.st.Counts(r.Context(), req.CountsRequest)
		if err != nil {
			requestInfoFrom(r.Context()).err = err
			if r.Context().Err() == nil {
				answerFailure(w, err)
			}
			return
		}
		answer.fill(req, counts)
	} else if req.By != "" {
		answer.By = &byAnswer{Field: req.By, Values: []valueAnswer{}}
	}
	f.tell(w.Header())
	writeJSON(w, http.StatusOK, answer)
}

func (a *countsAnswer) fill(req countsRequest, c pipeline.Counts) {
	a.Total = c.Total
	for _, b := range c.Buckets {
		// The first bucket starts where the range does, inside its interval: it
		// counts nothing before.
		start := b.Start
		if start.Before(req.From) {
			start = req.From.UTC()
		}
		ba := bucketAnswer{Start: start.Format(time.RFC3339Nano), Count: b.Count}
		if req.By != "" {
			ba.By = make(map[string]int64, len(c.Values))
			other := b.Count
			for _, v := range c.Values {
				n := b.By[v.Value]
				ba.By[v.Value] = n
				other -= n
			}
			// A document holding several values (an array) counts under each.
			other = max(other, 0)
			ba.Other = &other
		}
		a.Buckets = append(a.Buckets, ba)
	}
	if req.By != "" {
		a.By = &byAnswer{Field: req.By, Values: make([]valueAnswer, 0, len(c.Values)), Other: c.Total}
		for _, v := range c.Values {
			a.By.Values = append(a.By.Values, valueAnswer{Value: v.Value, Count: v.Count})
			a.By.Other -= v.Count
		}
		a.By.Other = max(a.By.Other, 0)
	}
}

// splitBy checks that req.By can be counted by value, from its types, and
// finds the array of nested objects it is in.
func (f *filter) splitBy(req *countsRequest) *apiError {
	types := f.caps[req.By]
	if len(types) == 0 {
		f.notes.Unknown = append(f.notes.Unknown, req.By)
		return nil
	}
	for typ := range types {
		switch typ {
		case "text", "match_only_text", "object", "nested", "geo_point", "geo_shape", "binary":
			return &apiError{Code: "invalid_parameter", Param: "by",
				Message: fmt.Sprintf("by needs a field of single values, such as a keyword: %s is a %s", req.By, typ)}
		}
	}
	for _, p := range parents(req.By) {
		if _, ok := f.caps[p]["nested"]; ok && p != req.By {
			req.ByNested = p
		}
	}
	return nil
}

// parents are field and the objects it is in, outermost first.
func parents(field string) []string {
	var out []string
	for i := range field {
		if field[i] == '.' {
			out = append(out, field[:i])
		}
	}
	return append(out, field)
}

var intervalPattern = regexp.MustCompile(`^([1-9][0-9]{0,5})(s|m|h|d)$`)

// parseCounts reads a /getCounts request: the range and q as the document
// endpoints read them, and the buckets.
func parseCounts(q url.Values, rules rangeRules) (countsRequest, *apiError) {
	var req countsRequest
	if bad := checkParams(q, countsParams); bad != nil {
		return req, bad
	}
	var bad *apiError
	if req.From, req.To, _, bad = parseDates(q, rules, false); bad != nil {
		return req, bad
	}
	if _, req.expr, bad = parseQ(q); bad != nil {
		return req, bad
	}
	req.buckets, bad = intParam(q, "buckets", defaultBuckets, 1, maxBuckets)
	if bad != nil {
		return req, bad
	}
	if req.Top, bad = intParam(q, "top", defaultTop, 1, maxTop); bad != nil {
		return req, bad
	}
	if raw, ok := q["by"]; ok {
		if err := fieldName(raw[0]); err != nil {
			return req, &apiError{Code: "invalid_parameter", Param: "by", Message: "by " + err.Error()}
		}
		req.By = raw[0]
	}
	// The most buckets a fixed interval may make: 2,000, or as asked; split,
	// each holds top+1 counts, and fewer fit.
	limit := maxBuckets
	if q.Has("buckets") {
		limit = req.buckets
	}
	if req.By != "" {
		limit = min(limit, maxSplitCounts/(req.Top+1))
		req.buckets = min(req.buckets, limit)
	}
	raw := q.Get("interval")
	if !q.Has("interval") || raw == "auto" {
		req.Interval = autoInterval(req.From, req.To, req.buckets)
		return req, nil
	}
	iv, ok := parseInterval(raw)
	if !ok {
		return req, &apiError{Code: "invalid_parameter", Param: "interval",
			Message: fmt.Sprintf("interval must be auto or a whole number of s, m, h or d from 1s to 1d, such as 30s or 5m; got %q", shorten(raw, maxEcho))}
	}
	req.Interval = iv
	if n := bucketCount(req.From, req.To, iv); n > limit {
		return req, &apiError{Code: "too_many_buckets", Param: "interval",
			Message: fmt.Sprintf("interval=%s makes %d buckets of this range, more than %d: use interval=%s or longer, or interval=auto", raw, n, limit, formatInterval(autoInterval(req.From, req.To, limit)))}
	}
	return req, nil
}

func parseInterval(raw string) (time.Duration, bool) {
	m := intervalPattern.FindStringSubmatch(raw)
	if m == nil {
		return 0, false
	}
	n, _ := strconv.Atoi(m[1])
	unit := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[m[2]]
	iv := time.Duration(n) * unit
	return iv, iv >= minInterval && iv <= maxInterval
}

// intParam reads a whole-number parameter in [lo, hi], def when absent.
func intParam(q url.Values, name string, def, lo, hi int) (int, *apiError) {
	raw, ok := q[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(raw[0])
	if err != nil || n < lo || n > hi || !allDigits(raw[0]) {
		return 0, &apiError{Code: "invalid_parameter", Param: name,
			Message: fmt.Sprintf("%s must be a whole number from %d to %d, got %q", name, lo, hi, shorten(raw[0], maxEcho))}
	}
	return n, nil
}

// autoInterval is the shortest round interval that cuts [from, to) into at most
// buckets buckets; past the roundest, a whole number of days.
func autoInterval(from, to time.Time, buckets int) time.Duration {
	for _, iv := range roundIntervals {
		if bucketCount(from, to, iv) <= buckets {
			return iv
		}
	}
	day := 24 * time.Hour
	days := to.Sub(from)/day/time.Duration(max(buckets-1, 1)) + 1
	for bucketCount(from, to, days*day) > buckets {
		days++
	}
	return days * day
}

// bucketCount is how many buckets of iv, aligned on the Unix epoch, [from, to)
// touches.
func bucketCount(from, to time.Time, iv time.Duration) int {
	if !from.Before(to) {
		return 0
	}
	ms := iv.Milliseconds()
	first, last := floorDiv(from.UnixMilli(), ms), floorDiv(to.UnixMilli()-1, ms)
	return int(last - first + 1)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// formatInterval writes an interval as the parameter takes it: 30s, 5m, 1d.
func formatInterval(iv time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if iv%u.d == 0 {
			return strconv.FormatInt(int64(iv/u.d), 10) + u.name
		}
	}
	return strings.TrimSuffix(iv.String(), "0s")
}

// fieldName checks the name of one field, as fields= takes them, without a
// wildcard.
func fieldName(name string) error {
	fields, err := parseFields(name)
	if err != nil {
		return err
	}
	if len(fields) != 1 || strings.Contains(name, "*") {
		return fmt.Errorf("must name one field, without a wildcard, such as camera_id; got %q", shorten(name, maxEcho))
	}
	return nil
}
