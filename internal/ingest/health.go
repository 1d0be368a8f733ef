package ingest

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// esState remembers whether bulk requests reach Elasticsearch, so that an outage is
// logged once when it starts and once when it ends, and readiness can report it.
type esState struct {
	log     *slog.Logger
	metrics *Metrics

	mu    sync.Mutex
	down  bool
	since time.Time
	cause error
}

func (s *esState) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cause = err
	if s.down {
		return
	}
	s.down, s.since = true, time.Now()
	s.metrics.esUp.Set(0)
	s.log.Warn("elasticsearch unreachable; holding batches and retrying, fetching paused", "err", err)
}

func (s *esState) succeeded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down {
		return
	}
	s.down = false
	s.metrics.esUp.Set(1)
	s.log.Info("elasticsearch reachable again; resuming", "after", time.Since(s.since).Round(time.Second).String())
}

// err is non-nil while Elasticsearch is known to be unreachable.
func (s *esState) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down {
		return nil
	}
	return fmt.Errorf("bulk requests failing since %s: %w", s.since.UTC().Format(time.RFC3339), s.cause)
}
