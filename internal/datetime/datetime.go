// Package datetime parses the date and time forms that producers and API users send.
//
// One parser serves both the ingester (event timestamps in messages) and the API
// (range bounds in query strings), so a date-time that was accepted on the way in
// can always be queried with the same text on the way out. Epochs, as numbers or
// as strings (FromEpoch, Epoch), are read only on the way in.
package datetime

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Layouts without a zone. Go's parser accepts any fractional seconds after the
// seconds field even when the layout has none, so "2023-03-09T19:40:00.123" matches
// the first layout.
var zoneless = []string{
	"2006-01-02T15:04:05",
	"2006-01-02T15:04",
	"2006-01-02",
}

// Parse reads s as RFC 3339 (with "Z" or a numeric offset), or as ISO 8601 without a
// zone ("2023-03-09T19:40:00", optionally with fractional seconds, or the date alone),
// which is read in loc. The result is in UTC.
func Parse(s string, loc *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("empty date")
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil && validOffset(s) {
		return inRange(strconv.Quote(s), t.UTC())
	}
	if hasZone(s) {
		return time.Time{}, fmt.Errorf("%q is not a valid RFC 3339 date-time (example: 2023-03-09T19:40:00Z or 2023-03-09T19:40:00+01:00)", s)
	}
	for _, layout := range zoneless {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return inRange(strconv.Quote(s), t.UTC())
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a date-time; use 2023-03-09T19:40:00 (zone %s), 2023-03-09T19:40:00Z, 2023-03-09T19:40:00+01:00 or 2023-03-09", s, loc)
}

// RangeError reports a date or epoch that is well formed but outside the years
// Elasticsearch can store.
type RangeError struct{ msg string }

func (e *RangeError) Error() string { return e.msg }

// inRange rejects times whose UTC year has no four-digit form (an offset can push
// 9999-12-31T23:30:00-01:00 into the year 10000), which Elasticsearch cannot store.
// what names the value in the error.
func inRange(what string, t time.Time) (time.Time, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		return time.Time{}, &RangeError{what + " is outside the years 0000-9999 in UTC"}
	}
	return t, nil
}

// hasZone reports whether s ends in a zone designator, so that a malformed offset
// is reported as such instead of being read as a local time.
func hasZone(s string) bool {
	if strings.HasSuffix(s, "Z") || strings.HasSuffix(s, "z") {
		return true
	}
	t := strings.IndexByte(s, 'T')
	if t < 0 {
		return false
	}
	return strings.ContainsAny(s[t:], "+-")
}

// validOffset reports whether the zone that ends s, which time.Parse accepted, is
// "Z" or an RFC 3339 offset: hours 00-23 and minutes 00-59. time.Parse also takes
// "+21:60" (as 22:00) and "+24:00", which no zone has and no other RFC 3339
// reader takes.
func validOffset(s string) bool {
	if len(s) < 6 || s[len(s)-6] != '+' && s[len(s)-6] != '-' {
		return true // "Z"
	}
	off := s[len(s)-5:]
	return off[:2] <= "23" && off[3:] <= "59"
}

// Epoch boundaries that tell seconds from milliseconds: any value below 1e11 read as
// seconds is before the year 5138, and as milliseconds before March 1973, so
// numbers under the boundary are seconds and numbers above are milliseconds.
const secondsMillisBoundary = 1e11

// FromEpoch converts an epoch number in seconds or milliseconds (told apart by
// magnitude) with an optional fraction into a UTC time. A negative epoch is a time
// before 1970, as the RFC 3339 form of that time would be.
func FromEpoch(n float64) (time.Time, error) {
	if math.IsNaN(n) || math.IsInf(n, 0) || math.Abs(n) >= 1e14 {
		return time.Time{}, &RangeError{fmt.Sprintf("epoch %v is out of range (neither seconds nor milliseconds)", n)}
	}
	var t time.Time
	if math.Abs(n) < secondsMillisBoundary {
		sec, frac := math.Modf(n)
		t = time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC()
	} else {
		ms, frac := math.Modf(n)
		t = time.UnixMilli(int64(ms)).Add(time.Duration(math.Round(frac * 1e6))).UTC()
	}
	return inRange(fmt.Sprintf("epoch %v", n), t)
}

// Epoch reads s as an epoch number written as a string ("1796520000",
// "1796520000123", "-86400", "1796520000.5"), as FromEpoch reads the number; ok is
// false when s is not a decimal number of that form, so that it can be read as a
// date-time instead.
func Epoch(s string) (t time.Time, ok bool, err error) {
	whole, frac, dot := strings.Cut(strings.TrimPrefix(s, "-"), ".")
	if !allDigits(whole) || dot && !allDigits(frac) {
		return time.Time{}, false, nil
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil { // cannot happen to a decimal number, but ParseFloat has the last word
		return time.Time{}, false, nil
	}
	t, err = FromEpoch(n)
	return t, true, err
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
