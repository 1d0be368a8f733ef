package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// esState remembers whether bulk requests reach Elasticsearch, so that an outage is
// logged once when it starts and once when it ends, and readiness can report it.
// An outage is one of two kinds, which need different people: Elasticsearch
// unreachable (the cluster, the network), or refusing the requests with 401 or
// 403 (the credentials or the role's privileges).
type esState struct {
	log     *slog.Logger
	metrics *Metrics

	mu      sync.Mutex
	down    bool
	refused bool // while down: the cause is a 401 or 403
	since   time.Time
	cause   error
}

func (s *esState) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cause = err
	refused := isRefusal(err)
	if s.down && s.refused == refused {
		return
	}
	if !s.down {
		s.since = time.Now()
	}
	s.down, s.refused = true, refused
	s.metrics.esUp.Set(0)
	if refused {
		s.metrics.esRefused.Set(1)
		s.log.Warn("elasticsearch refuses the bulk requests (credentials or privileges); holding batches and retrying, fetching paused", "err", err)
		return
	}
	s.metrics.esRefused.Set(0)
	s.log.Warn("elasticsearch unreachable; holding batches and retrying, fetching paused", "err", err)
}

func (s *esState) succeeded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down {
		return
	}
	s.down, s.refused = false, false
	s.metrics.esUp.Set(1)
	s.metrics.esRefused.Set(0)
	s.log.Info("elasticsearch reachable again; resuming", "after", time.Since(s.since).Round(time.Second).String())
}

// err is non-nil while bulk requests are known to fail: Elasticsearch unreachable
// or refusing them.
func (s *esState) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down {
		return nil
	}
	return fmt.Errorf("bulk requests failing since %s: %w", s.since.UTC().Format(time.RFC3339), s.cause)
}

// isRefusal reports whether err is Elasticsearch's answer 401 (credentials
// refused: wrong, expired, revoked) or 403 (a privilege missing). The store's
// errors carry the status they were answered with.
func isRefusal(err error) bool {
	var answer interface{ StatusCode() int }
	if !errors.As(err, &answer) {
		return false
	}
	code := answer.StatusCode()
	return code == http.StatusUnauthorized || code == http.StatusForbidden
}
