package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// errPreempted ends a stream whose slot went to a newcomer.
var errPreempted = errors.New("preempted: the stream's client took nothing for the longest while all slots (API_MAX_STREAMS) were taken, and its slot went to a new stream")

// holder is a stream holding a slot, as the pool sees it.
type holder interface {
	// stalled is how long the stream has been waiting for its client to take
	// the current write; 0 when it is not writing.
	stalled(now time.Time) time.Duration
	// preempt ends the stream; its slot frees when its handler returns.
	preempt()
}

// streamSlots serves at most max streams at once: every stream holds an
// Elasticsearch point in time and a share of its search threads. One client may
// hold at most perClient of them, and is answered 429 beyond that, so that it
// cannot take every slot while staying under the rate limit.
//
// When every slot is taken, a newcomer does not get a 503 at once: the stream
// that has waited longest for its client, if that is at least preemptAfter, is
// ended and the newcomer takes its slot. Otherwise it waits up to wait for a
// slot or for such a stream. So clients that open streams and never read them
// delay others by preemptAfter at most, where a pool that refuses newcomers
// stays theirs until the pace rule cuts each stream.
//
// A steady reader is pre-empted only when every other stream is being read or
// waits for Elasticsearch, and its own socket buffers have paused it for more
// than preemptAfter (they can, for up to 10s at 150 KB/s over HTTP/1.1; see
// pace): the pool is then full of clients being served, and one of them gives way
// to the newcomer.
type streamSlots struct {
	max, perClient int
	preemptAfter   time.Duration
	wait           time.Duration
	now            func() time.Time

	mu       sync.Mutex
	held     map[holder]bool // true once pre-empted
	byClient map[string]int
	evicting int           // pre-empted streams not yet ended
	freed    chan struct{} // closed, and replaced, when a slot frees
}

func newStreamSlots(max, perClient int, preemptAfter, wait time.Duration) *streamSlots {
	return &streamSlots{max: max, perClient: perClient, preemptAfter: preemptAfter, wait: wait, now: time.Now,
		held: map[holder]bool{}, byClient: map[string]int{}, freed: make(chan struct{})}
}

// slotRefusal is why acquire gave no slot; nil when the caller went away.
type slotRefusal struct {
	status int
	apiError
}

// acquire takes a slot for h, of client's; release gives it back. preempted
// reports whether it ended another stream to get it.
func (s *streamSlots) acquire(ctx context.Context, client string, h holder) (release func(), preempted bool, no *slotRefusal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byClient[client] >= s.perClient {
		return nil, false, &slotRefusal{http.StatusTooManyRequests, apiError{Code: "too_many_client_streams",
			Message: fmt.Sprintf("this client already has %d streams running, as many as one client may; retry once one has ended", s.perClient)}}
	}
	s.byClient[client]++
	giveUp := time.NewTimer(s.wait)
	defer giveUp.Stop()
	for !s.admits() {
		if s.live() >= s.max {
			if v := s.longestStalled(); v != nil {
				s.held[v] = true
				s.evicting++
				preempted = true
				v.preempt()
				continue
			}
		}
		freed := s.freed
		s.mu.Unlock()
		var stop bool
		select {
		case <-freed:
		case <-time.After(s.preemptAfter / 4): // a stream may have stalled long enough meanwhile
		case <-giveUp.C:
			stop = true
		case <-ctx.Done():
			stop = true
		}
		s.mu.Lock()
		if stop && !s.admits() {
			s.leave(client)
			if ctx.Err() != nil {
				return nil, false, nil
			}
			return nil, false, &slotRefusal{http.StatusServiceUnavailable, apiError{Code: "too_many_streams",
				Message: fmt.Sprintf("the backend is already serving %d streams, none of which has waited long on its client; try again shortly", s.max)}}
		}
	}
	s.held[h] = false
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.held[h] {
			s.evicting--
		}
		delete(s.held, h)
		s.leave(client)
		close(s.freed)
		s.freed = make(chan struct{})
	}, preempted, nil
}

// live is the number of streams served, not counting those pre-empted and
// still ending.
func (s *streamSlots) live() int { return len(s.held) - s.evicting }

// admits reports whether a newcomer may start. A pre-empted stream gives its
// slot at once: ending takes it up to 5s over HTTP/1.1 (crypto/tls's close_notify
// into a full socket) and up to STREAM_STALL_TIMEOUT on an HTTP/2 connection
// whose client reads nothing at all, long enough to make the newcomer wait. It
// still holds its point in time until then, so at most max of them may be
// ending at once.
func (s *streamSlots) admits() bool { return s.live() < s.max && len(s.held) < 2*s.max }

func (s *streamSlots) leave(client string) {
	if s.byClient[client]--; s.byClient[client] == 0 {
		delete(s.byClient, client)
	}
}

// longestStalled is the stream, not already pre-empted, that has waited longest
// for its client, if that is at least preemptAfter.
func (s *streamSlots) longestStalled() holder {
	now := s.now()
	var victim holder
	longest := s.preemptAfter
	for h, gone := range s.held {
		if d := h.stalled(now); !gone && d >= longest {
			victim, longest = h, d
		}
	}
	return victim
}

// stallChunk is the most written under one deadline, so that the pace rule sees
// a slow client's progress as it happens. (HTTP/2 hands a handler's writes to
// the connection in pieces of this size too.)
const stallChunk = 4 << 10

// meter is the response of a stream holding a slot: it measures what the client
// takes, ends the stream when pace says the client does not keep up, and lets
// the pool pre-empt it. It sits beneath compression, so it counts the bytes that
// cross the network.
type meter struct {
	http.ResponseWriter
	rc     *http.ResponseController
	now    func() time.Time
	cancel context.CancelCauseFunc

	pace     pace      // the handler's goroutine alone
	deadline time.Time // of the write under way
	tooSlow  bool      // the pace rule ended the stream

	since     atomic.Int64 // when the write under way began (UnixNano); 0 outside writes
	preempted atomic.Bool
}

func newMeter(w http.ResponseWriter, window time.Duration, minRate int, now func() time.Time, cancel context.CancelCauseFunc) *meter {
	return &meter{ResponseWriter: w, rc: http.NewResponseController(w), now: now, cancel: cancel,
		pace: pace{window: window, minRate: float64(minRate)}}
}

func (m *meter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), stallChunk)
		k, err := m.wait(func() (int, error) { return m.ResponseWriter.Write(p[:n]) })
		written += k
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// FlushError is what http.ResponseController.Flush calls; a flush waits for the
// client like a write.
func (m *meter) FlushError() error {
	_, err := m.wait(func() (int, error) { return 0, m.rc.Flush() })
	return err
}

// Flush is for wrappers that look for http.Flusher (the gzip writer does).
func (m *meter) Flush() { _ = m.FlushError() }

// Unwrap lets http.ResponseController reach the connection.
func (m *meter) Unwrap() http.ResponseWriter { return m.ResponseWriter }

// wait runs one write under the deadline the pace rule allows, and records what
// it handed on.
func (m *meter) wait(write func() (int, error)) (int, error) {
	if m.preempted.Load() {
		return 0, errPreempted
	}
	allowed := m.pace.allowance()
	if allowed <= 0 {
		m.tooSlow = true
		return 0, m.slow()
	}
	start := m.now()
	m.deadline = start.Add(allowed)
	_ = m.rc.SetWriteDeadline(m.deadline)
	if m.preempted.Load() {
		// preempt may have set its deadline just before this one replaced it.
		_ = m.rc.SetWriteDeadline(time.Unix(1, 0))
		return 0, errPreempted
	}
	m.since.Store(start.UnixNano())
	n, err := write()
	m.since.Store(0)
	end := m.now()
	m.pace.took(n, end.Sub(start))
	switch {
	case err == nil:
		return n, nil
	case m.preempted.Load():
		return n, fmt.Errorf("%w (%w)", errPreempted, err)
	case !end.Before(m.deadline):
		m.tooSlow = true
		return n, fmt.Errorf("%w: %w", m.slow(), err)
	}
	return n, err
}

func (m *meter) slow() error {
	return fmt.Errorf("the client took less than %.0f bytes/s (STREAM_MIN_RATE) over %s (STREAM_STALL_TIMEOUT) of waiting for it",
		m.pace.minRate, m.pace.window)
}

func (m *meter) stalled(now time.Time) time.Duration {
	since := m.since.Load()
	if since == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, since))
}

// preempt ends the stream from another goroutine: a deadline in the past ends
// the write under way (HTTP/2 resets the stream, HTTP/1.1 closes the
// connection), and the cancelled context ends the export.
func (m *meter) preempt() {
	m.preempted.Store(true)
	m.cancel(errPreempted)
	_ = m.rc.SetWriteDeadline(time.Unix(1, 0))
}

// limitStreams admits a stream when slots gives it a slot, and meters it.
func limitStreams(slots *streamSlots, window time.Duration, minRate int, m *Metrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithCancelCause(r.Context())
			defer cancel(nil)
			mw := newMeter(w, window, minRate, slots.now, cancel)
			release, preempted, no := slots.acquire(r.Context(), clientKey(r), mw)
			if release == nil {
				if no != nil {
					w.Header().Set("Retry-After", "5")
					writeError(w, no.status, no.apiError)
				}
				return
			}
			if preempted {
				m.streamCuts.WithLabelValues("preempted").Inc()
			}
			m.streams.Inc()
			defer func() {
				m.streams.Dec()
				release()
				switch {
				case mw.preempted.Load():
					requestInfoFrom(r.Context()).err = errPreempted
				case mw.tooSlow:
					m.streamCuts.WithLabelValues("too_slow").Inc()
				default:
					// The connection may serve further requests, which must not
					// inherit this stream's deadline.
					_ = mw.rc.SetWriteDeadline(time.Time{})
				}
			}()
			next.ServeHTTP(mw, r.WithContext(ctx))
		})
	}
}
