package ingest

import (
	"log/slog"
	"sync"
	"time"

	"github.com/annotated-data/pipeline/internal/document"
)

// fallbackLogInterval is the least time between two log lines about messages
// stored under their publish time: a producer that always sends a bad timestamp
// must not flood the log.
const fallbackLogInterval = time.Minute

// fallbacks counts the messages stored under their publish time, by reason, and
// logs them at most once per interval with how many there were since.
type fallbacks struct {
	log     *slog.Logger
	metrics *Metrics
	field   string
	every   time.Duration

	mu     sync.Mutex
	last   time.Time // when the last line was logged
	unsaid int       // messages since then
}

func (f *fallbacks) note(problem document.TimestampProblem, subject string) {
	f.metrics.fallbacks.WithLabelValues(string(problem)).Inc()
	f.mu.Lock()
	f.unsaid++
	if time.Since(f.last) < f.every {
		f.mu.Unlock()
		return
	}
	n := f.unsaid
	f.last, f.unsaid = time.Now(), 0
	f.mu.Unlock()
	// messages: how many since the previous such line, at most one per f.every.
	f.log.Warn("messages stored under their publish time: their own timestamp is missing, unreadable or outside the accepted window (see webserver_timestamp_fallbacks_total; requiring a timestamp dead-letters them instead)",
		"messages", n, "latest_reason", string(problem), "latest_subject", subject,
		"fields", document.TimestampKey+", "+f.field)
}
