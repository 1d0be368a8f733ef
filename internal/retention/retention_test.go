package retention

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type fakeIndices struct{ names, deleted []string }

func (f *fakeIndices) Indices(context.Context) ([]string, error) { return f.names, nil }
func (f *fakeIndices) DeleteIndex(_ context.Context, name string) error {
	f.deleted = append(f.deleted, name)
	return nil
}

func sweep(t *testing.T, cfg Config, now time.Time, names ...string) []string {
	t.Helper()
	f := &fakeIndices{names: names}
	r := New(f, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	r.now = func() time.Time { return now }
	got, err := r.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, f.deleted) {
		t.Fatalf("reported %v, deleted %v", got, f.deleted)
	}
	return got
}

func TestOnlyDaysWhollyOlderThanTheRetentionAreDeleted(t *testing.T) {
	now := time.Date(2026, 11, 29, 0, 30, 0, 0, time.UTC)
	got := sweep(t, Config{Prefix: "a", Retention: 30 * 24 * time.Hour}, now,
		"a-2026.10.20", // 40 days ago
		"a-2026.10.29", // 31 days ago: ended 30 days and 30 minutes ago
		"a-2026.10.30", // 30 days ago: ends 30 days ago at midnight, not wholly older yet
		"a-2026.10.31", // 29 days ago
		"a-2026.11.29", // today
	)
	if want := []string{"a-2026.10.20", "a-2026.10.29"}; !slices.Equal(got, want) {
		t.Errorf("deleted %v, want %v", got, want)
	}
}

func TestIndicesOfOtherPrefixesAndLayoutsAreNeverDeleted(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	got := sweep(t, Config{Prefix: "a", Retention: 24 * time.Hour}, now,
		"a-lidar-2020.01.01", "a-2019-2020.01.01", "b-2020.01.01", "a-2020.01", "a-2020.1.1", "a-2020.01.01-restored", "a-2020.01.01")
	if want := []string{"a-2020.01.01"}; !slices.Equal(got, want) {
		t.Errorf("deleted %v, want %v", got, want)
	}
}

func TestMonthlyIndicesExpireWithTheirLastDay(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	got := sweep(t, Config{Prefix: "a", Monthly: true, Retention: 30 * 24 * time.Hour}, now,
		"a-2026.09", "a-2026.10", "a-2026.11", "a-2026.10.01", "a-2026-2026.09")
	if want := []string{"a-2026.09"}; !slices.Equal(got, want) {
		t.Errorf("deleted %v, want %v", got, want)
	}
}

func TestTodaysIndexIsNeverDeletedWhateverTheRetention(t *testing.T) {
	now := time.Date(2026, 11, 29, 23, 59, 0, 0, time.UTC)
	if got := sweep(t, Config{Prefix: "a", Retention: time.Nanosecond}, now, "a-2026.11.29", "a-2026.11.30"); len(got) != 0 {
		t.Errorf("deleted %v, want nothing", got)
	}
}
