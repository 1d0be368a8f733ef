package datetime

import (
	"math"
	"testing"
	"time"
)

func TestParseAcceptsTheDocumentedForms(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	utc := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		in   string
		loc  *time.Location
		want time.Time
	}{
		{"2023-03-09T19:40:00", time.UTC, utc("2023-03-09T19:40:00Z")},
		{"2023-03-09T19:40:00.123456", time.UTC, utc("2023-03-09T19:40:00.123456Z")},
		{"2023-03-09T19:40", time.UTC, utc("2023-03-09T19:40:00Z")},
		{"2023-03-09", time.UTC, utc("2023-03-09T00:00:00Z")},
		{"2023-03-09T19:40:00Z", time.UTC, utc("2023-03-09T19:40:00Z")},
		{"2023-03-09T19:40:00.5Z", time.UTC, utc("2023-03-09T19:40:00.5Z")},
		{"2023-03-09T19:40:00+01:00", time.UTC, utc("2023-03-09T18:40:00Z")},
		{"2023-03-09T19:40:00-05:30", time.UTC, utc("2023-03-10T01:10:00Z")},
		// A zone-less value is read in the configured zone; an explicit one wins.
		{"2023-03-09T19:40:00", berlin, utc("2023-03-09T18:40:00Z")},
		{"2023-07-09T19:40:00", berlin, utc("2023-07-09T17:40:00Z")},
		{"2023-03-09T19:40:00Z", berlin, utc("2023-03-09T19:40:00Z")},
		// The widest offsets RFC 3339 allows: hours 00-23, minutes 00-59.
		{"2023-03-09T19:40:00+23:59", time.UTC, utc("2023-03-08T19:41:00Z")},
		{"2023-03-09T19:40:00-23:59", time.UTC, utc("2023-03-10T19:39:00Z")},
		// Before 1970 is a date like any other.
		{"1969-07-20T20:17:40Z", time.UTC, utc("1969-07-20T20:17:40Z")},
		{"0001-01-01T00:00:00Z", time.UTC, utc("0001-01-01T00:00:00Z")},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in, tt.loc)
		if err != nil {
			t.Errorf("Parse(%q, %s): %v", tt.in, tt.loc, err)
			continue
		}
		if !got.Equal(tt.want) || got.Location() != time.UTC {
			t.Errorf("Parse(%q, %s) = %v, want %v in UTC", tt.in, tt.loc, got, tt.want)
		}
	}
}

func TestParseRejectsEverythingElse(t *testing.T) {
	for _, in := range []string{
		"",
		"yesterday",
		"2023-03-09 19:40:00",
		"2023-13-09T19:40:00",
		"2023-03-09T25:40:00",
		"2023-03-09T19:40:00+25:00",
		// RFC 3339 offsets have hours 00-23 and minutes 00-59; Go's time.Parse
		// takes these two as 22:00 and 24 hours.
		"2023-03-09T19:40:00+21:60",
		"2023-03-09T19:40:00+24:00",
		"2023-03-09T19:40:00-24:00",
		"2023-03-09T19:40:00.5+00:60",
		"2023-03-09T19:40:00+0100",
		"09/03/2023",
		"1678390800",
		"2023-03-09T19:40:00Zjunk",
		"9999-12-31T23:30:00-01:00", // the year 10000 in UTC
		"0000-01-01T00:00:00+01:00", // the year -1 in UTC
	} {
		if got, err := Parse(in, time.UTC); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", in, got)
		}
	}
}

func TestFromEpochTellsSecondsFromMilliseconds(t *testing.T) {
	want := time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC)
	tests := []struct {
		in   float64
		want time.Time
	}{
		{1678390800, want},
		{1678390800000, want},
		{1678390800.25, want.Add(250 * time.Millisecond)},
		{1678390800123, want.Add(123 * time.Millisecond)},
		{0, time.Unix(0, 0).UTC()},
		// Before 1970, as an RFC 3339 date of then would be, with the same
		// boundary by magnitude between seconds and milliseconds.
		{-1, time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC)},
		{-1.5, time.Date(1969, 12, 31, 23, 59, 58, 5e8, time.UTC)},
		{-14182940, time.Date(1969, 7, 20, 20, 17, 40, 0, time.UTC)},
		{-1e12, time.Date(1938, 4, 24, 22, 13, 20, 0, time.UTC)},
		{-1e12 - 0.5, time.Date(1938, 4, 24, 22, 13, 19, 9995e5, time.UTC)},
		{-62135596800, time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)},
		{-62135596800000, time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		got, err := FromEpoch(tt.in)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("FromEpoch(%v) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []float64{1e15, -1e15, -62167219201, -62167219201000, math.NaN(), math.Inf(-1)} { // the last two epochs: the year -1
		if _, err := FromEpoch(bad); err == nil {
			t.Errorf("FromEpoch(%v): want an error", bad)
		}
	}
}

func TestEpochReadsAnEpochWrittenAsAString(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
	}{
		{"1796520000", time.Date(2026, 12, 6, 1, 20, 0, 0, time.UTC)},
		{"1796520000123", time.Date(2026, 12, 6, 1, 20, 0, 123e6, time.UTC)},
		{"1678390800.25", time.Date(2023, 3, 9, 19, 40, 0, 250e6, time.UTC)},
		{"0", time.Unix(0, 0).UTC()},
		{"-14182940", time.Date(1969, 7, 20, 20, 17, 40, 0, time.UTC)},
	}
	for _, tt := range tests {
		got, ok, err := Epoch(tt.in)
		if !ok || err != nil || !got.Equal(tt.want) {
			t.Errorf("Epoch(%q) = %v, %v, %v; want %v", tt.in, got, ok, err, tt.want)
		}
	}
	// Epochs in form, but out of range: the caller must hear why.
	for _, in := range []string{"100000000000000", "-62167219201"} {
		if got, ok, err := Epoch(in); !ok || err == nil {
			t.Errorf("Epoch(%q) = %v, %v, %v; want an epoch out of range", in, got, ok, err)
		}
	}
	// Not a decimal epoch: left to the date-time parser, which refuses most.
	for _, in := range []string{"", "-", "1.", ".5", "+1", " 1", "1e9", "0x10", "Inf", "NaN", "1_000", "2023-03-09", "20:40"} {
		if got, ok, err := Epoch(in); ok {
			t.Errorf("Epoch(%q) = %v, %v, %v; want it not read as an epoch", in, got, ok, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"2023-03-09T19:40:00", "2023-03-09T19:40:00.123Z", "2023-03-09T19:40:00+01:00", "2023-03-09", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Parse(s, time.UTC)
		if err != nil {
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("Parse(%q) returned a non-UTC time %v", s, got)
		}
		// Whatever was accepted must survive a round trip through the canonical form.
		again, err := Parse(got.Format(time.RFC3339Nano), time.UTC)
		if err != nil || !again.Equal(got) {
			t.Fatalf("round trip of %q: %v, %v", s, again, err)
		}
	})
}
