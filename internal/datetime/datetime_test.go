package datetime

import (
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
	}
	for _, tt := range tests {
		got, err := FromEpoch(tt.in)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("FromEpoch(%v) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []float64{-1, 1e15} {
		if _, err := FromEpoch(bad); err == nil {
			t.Errorf("FromEpoch(%v): want an error", bad)
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
