package ingest

import (
	"log/slog"
	"sync"
	"time"

	"github.com/annotated-data/pipeline/internal/document"
)

// sampledLogInterval is the least time between two log lines about messages
// stored under their publish time, or with fields set aside.
const sampledLogInterval = time.Minute

// fallbacks counts the messages stored under their publish time, by reason, and
// logs them at most once per interval with how many there were since.
type fallbacks struct {
	log     *slog.Logger
	metrics *Metrics
	field   string
	said    sampled
}

func (f *fallbacks) note(problem document.TimestampProblem, subject string) {
	f.metrics.fallbacks.WithLabelValues(string(problem)).Inc()
	n, due := f.said.count()
	if !due {
		return
	}
	// messages: how many since the previous such line, at most one per interval.
	f.log.Warn("messages stored under their publish time: their own timestamp is missing, unreadable or outside the accepted window (see webserver_timestamp_fallbacks_total; requiring a timestamp dead-letters them instead)",
		"messages", n, "latest_reason", string(problem), "latest_subject", subject,
		"fields", document.TimestampKey+", "+f.field)
}

// sampled counts events that are logged at most once per interval, with how
// many there were since the last line: a producer that always sends the same
// kind of message must not flood the log.
type sampled struct {
	every time.Duration

	mu     sync.Mutex
	last   time.Time // when the last line was logged
	unsaid int       // events since then
}

// count counts one event, and says whether a line is due now, for how many.
func (s *sampled) count() (n int, due bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unsaid++
	if time.Since(s.last) < s.every {
		return 0, false
	}
	n = s.unsaid
	s.last, s.unsaid = time.Now(), 0
	return n, true
}
