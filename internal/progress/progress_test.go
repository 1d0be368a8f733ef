package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestLineShowsBarCountRateAndETA(t *testing.T) {
	tests := []struct {
		done, total int64
		elapsed     time.Duration
		want        string
	}{
		{0, 100, 0, "[                              ]   0%  0/100 frames  0/s  ETA ?"},
		{50, 100, 10 * time.Second, "[==============>               ]  50%  50/100 frames  5/s  ETA 10s"},
		{100, 100, 20 * time.Second, "[==============================] 100%  100/100 frames  5/s  ETA 0s"},
		{42, 0, 2 * time.Second, "42 frames  21/s  2s"},
	}
	for _, tt := range tests {
		if got := Line("frames", tt.done, tt.total, tt.elapsed); got != tt.want {
			t.Errorf("Line(%d, %d, %s) =\n  %q\nwant\n  %q", tt.done, tt.total, tt.elapsed, got, tt.want)
		}
	}
}

func TestReporterWritesPlainLinesWhenNotOnATerminal(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf, "messages", 10)
	r.Add(10)
	r.Finish()
	out := buf.String()
	if strings.Contains(out, "\r") || strings.Contains(out, "\033") {
		t.Errorf("terminal control codes in a log: %q", out)
	}
	if !strings.Contains(out, "10/10 messages") || !strings.HasSuffix(out, "\n") {
		t.Errorf("final line missing: %q", out)
	}
}
