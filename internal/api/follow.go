package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/annotated-data/pipeline/internal/follow"
	"github.com/annotated-data/pipeline/internal/pipeline"
)

// endGrace is how long after end_date a follow waits for a message stored
// before it when NATS has stored none since: allowance for the clocks of the
// backend and the NATS servers to differ.
const endGrace = 2 * time.Second

// Hub is what follow=true needs: package follow's Hub for the documents, and
// the webserver's progress for when an end_date is reached (cmd/backend puts
// the two together).
type Hub interface {
	// Start returns the floor a follow's history goes up to: every document
	// created by a message up to it is searchable when Start returns.
	Start(ctx context.Context) (floor uint64, err error)
	// Follow subscribes to the documents of [from, to) that match filter (nil:
	// all) created by messages after sequence pos. Those between pos and where
	// the shared steps are go to send first, page by page. An error that is
	// follow.ErrTooSlow or follow.ErrClosed cuts the follower.
	Follow(ctx context.Context, pos uint64, from, to time.Time, fields []string, filter any, send func(pipeline.Page) error) (Follower, error)
	// PollInterval is how often the steps look for new documents.
	PollInterval() time.Duration
	// PublishedBefore returns the last sequence stored before t, and whether no
	// message stored before t can still come.
	PublishedBefore(ctx context.Context, t time.Time) (last uint64, final bool, err error)
}

// Follower is one subscription of Hub.Follow.
type Follower interface {
	// Ready is signalled when Next has something.
	Ready() <-chan struct{}
	// Next takes the documents handed out since the last call, in sequence
	// order with their keys, and the sequence they reach; or the error that
	// ended the subscription (follow.ErrTooSlow, follow.ErrClosed).
	Next() (page pipeline.Page, reached uint64, err error)
	// Close ends the subscription.
	Close()
}

// following serves follow=true: the history of a range, then its documents as
// the webserver settles them (see package follow for why nothing is missed or
// repeated).
type following struct {
	hub       Hub
	cursors   cursors
	slots     chan struct{}
	heartbeat time.Duration
	poll      time.Duration
	m         *Metrics
}

// acquire takes a follower's slot, or answers 503.
func (f *following) acquire(w http.ResponseWriter) (release func(), ok bool) {
	select {
	case f.slots <- struct{}{}:
	default:
		unavailable(w, apiError{Code: "too_many_followers",
			Message: fmt.Sprintf("the backend is already serving %d follow=true streams; try again shortly", cap(f.slots))})
		return nil, false
	}
	f.m.followers.Inc()
	return func() {
		f.m.followers.Dec()
		<-f.slots
	}, true
}

// history streams the stored documents of req, after resume when given, up to
// the sequence floor (streamer.history is one).
type history func(ctx context.Context, sw *streamWriter, req request, resume *cursor, floor *uint64, sent func(pipeline.Page)) error

// stream sends the history of req up to the webserver's ack floor, then the
// live documents, until end_date's messages are all settled (never, without an
// end_date), the client leaves, or it cannot keep up.
func (f *following) stream(ctx context.Context, sw *streamWriter, req request, resume *cursor, past history, sent func(pipeline.Page)) error {
	floor, err := f.hub.Start(ctx)
	if err != nil {
		return &failure{status: http.StatusServiceUnavailable, err: err, apiError: apiError{Code: "follow_unavailable",
			Message: "the webserver's progress cannot be read from NATS; try again shortly"}}
	}
	pos := floor
	if resume != nil {
		// A cursor beyond what is settled was not issued here, or by another
		// pipeline: resuming from it would skip documents.
		at := resume.floor
		if resume.live {
			at = resume.key.Seq
		}
		if at > floor {
			return &failure{status: http.StatusBadRequest, apiError: apiError{Code: "invalid_cursor", Param: req.afterParam,
				Message: fmt.Sprintf("%s is ahead of the documents settled so far (sequence %d > %d): it belongs to another pipeline", req.afterParam, at, floor)}}
		}
		pos = at
	}
	live := func(seq uint64) string { return f.cursors.encode(req, cursor{live: true, key: pipeline.Key{Seq: seq}}) }
	// limit, when set, ends the stream after that many documents, live ones
	// included: "the next 100 frames".
	done := func() bool { return req.Limit > 0 && sw.count >= req.Limit }
	if resume == nil || !resume.live {
		if err := past(ctx, sw, req, resume, &pos, sent); err != nil {
			return err
		}
		if done() {
			return sw.finish()
		}
		if err := sw.position(live(pos), true); err != nil {
			return err
		}
	}

	send := func(p pipeline.Page) error {
		if req.Limit > 0 && sw.count+len(p.Docs) > req.Limit {
			n := req.Limit - sw.count
			p = pipeline.Page{Docs: p.Docs[:n], Keys: p.Keys[:n]}
		}
		err := sw.page(p, func(i int) string { return live(p.Keys[i].Seq) })
		sent(p)
		f.m.followed.Add(float64(len(p.Docs)))
		return err
	}
	fl, err := f.hub.Follow(ctx, pos, req.From, req.To, req.Fields, req.Filter, func(p pipeline.Page) error {
		if done() {
			return nil // the rest of the catch-up is not wanted
		}
		pos = p.Keys[len(p.Keys)-1].Seq
		return send(p)
	})
	if err != nil {
		// cut tells a client too slow, or a backend stopping, apart from a
		// store that failed while catching up, or a client that left.
		return f.cut(err, sw.count)
	}
	defer fl.Close()

	end := endOf{f: f, to: req.To, open: req.open}
	heartbeat := time.NewTicker(f.heartbeat)
	defer heartbeat.Stop()
	poll := time.NewTicker(f.poll)
	defer poll.Stop()
	wrote := false
	for {
		if done() || end.reached(ctx, pos) {
			return sw.finish()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-fl.Ready():
			page, reached, err := fl.Next()
			if err != nil {
				return f.cut(err, sw.count)
			}
			if len(page.Docs) > 0 {
				if err := send(page); err != nil {
					return err
				}
				wrote = true
			}
			pos = max(pos, reached)
		case <-heartbeat.C:
			// Idle, a keep-alive. Busy, only where documents carry no cursor
			// (NDJSON): without it, a client cut off under steady traffic could
			// resume only from where it went live, and get all since again.
			if !wrote || !sw.f.docCursors {
				if err := sw.position(live(pos), false); err != nil {
					return err
				}
			}
			wrote = false
		case <-poll.C: // end_date may have passed
		}
	}
}

// cut ends a follower that could not keep up, or because the backend stops.
func (f *following) cut(err error, count int) error {
	if errors.Is(err, follow.ErrClosed) {
		f.m.followCuts.WithLabelValues("shutdown").Inc()
		return &failure{status: http.StatusServiceUnavailable, err: err, apiError: apiError{Code: "shutting_down",
			Message: fmt.Sprintf("the stream was ended after %d documents: the backend is stopping; resume with the last cursor received (EventSource does so by itself)", count)}}
	}
	if !errors.Is(err, follow.ErrTooSlow) {
		return err
	}
	f.m.followCuts.WithLabelValues("too_slow").Inc()
	return &failure{status: http.StatusServiceUnavailable, err: err, apiError: apiError{Code: "follower_too_slow",
		Message: fmt.Sprintf("the stream was ended after %d documents: the client did not keep up with new documents; resume with the last cursor received", count)}}
}

// endOf finds when a follow with an end_date is complete: once every message
// stored before end_date is settled, its documents have all been sent.
type endOf struct {
	f     *following
	to    time.Time
	open  bool
	seq   uint64 // the last sequence stored before to, once known
	known bool
}

func (e *endOf) reached(ctx context.Context, pos uint64) bool {
	if e.open {
		return false
	}
	if !e.known && !time.Now().Before(e.to) {
		last, final, err := e.f.hub.PublishedBefore(ctx, e.to)
		switch {
		case err != nil:
			// Asked again at the next poll; the stream goes on meanwhile.
		case final || time.Since(e.to) > endGrace:
			e.seq, e.known = last, true
		}
	}
	return e.known && pos >= e.seq
}
