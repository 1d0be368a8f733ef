package api

import "time"

// pace is the rule that ends a stream whose client does not keep up: over any
// window of the time the stream spends waiting on its client, the client must
// take at least minRate bytes a second on average.
//
// What the client has taken is what a write handed on (to the HTTP/2 flow-control
// window, the TLS connection and the kernel's socket buffers). That moves in
// steps, not smoothly: the kernel wakes a blocked writer only once a third of its
// send buffer is free, so a reader of 150 KB/s behind a 4 MB buffer is seen to
// take 1.4 MB, then nothing for 9.6 s (measured on loopback, HTTP/1.1 over TLS).
// No rule can tell such a pause from a client that stopped reading until it is
// over, so the window must be longer than the longest step of the slowest reader
// to be served, and the rate low enough that window*(rate of that reader -
// minRate) covers a step. Within that, a rate catches what a deadline on each
// write could not: a reader of 1 KB/s meets "a few KB before each deadline" for
// hours, holding its slot and its point in time; it takes less than minRate over
// the window, and is cut one window after the buffers filled.
//
// Only time spent waiting in a write counts ("busy" time): a stream waiting for
// Elasticsearch, or an idle follow=true stream, is not the client's fault.
type pace struct {
	window  time.Duration
	minRate float64 // bytes a second

	busy    time.Duration // time spent waiting on the client so far
	taken   int64         // bytes the client has taken so far
	samples []sample      // (busy, taken) as they grew; see allowance
}

type sample struct {
	busy  time.Duration
	taken int64
}

// allowance is how much longer, in busy time, the client may take nothing
// before the rule is broken; 0 when it is broken already. The rule breaks at
// the first busy time t at which taken - taken(t - window) < minRate*window, where
// taken(x) is the bytes taken at busy time x (0 before the stream began): the
// first recorded sample holding more than taken - minRate*window is the last
// point that still vouches for the client, for one window.
func (p *pace) allowance() time.Duration {
	owed := float64(p.taken) - p.minRate*p.window.Seconds()
	at := time.Duration(0) // the stream's start: taken(x) = 0 there, which vouches while owed < 0
	if owed >= 0 {
		for _, s := range p.samples {
			if float64(s.taken) > owed {
				at = s.busy
				break
			}
		}
	}
	return max(0, at+p.window-p.busy)
}

// took records that a write which waited blocked for the client handed n bytes on.
func (p *pace) took(n int, blocked time.Duration) {
	p.busy += blocked
	p.taken += int64(n)
	// Samples closer together than a 64th of the window are merged, crediting
	// the bytes slightly early: the rule errs by at most that much, on the strict
	// side, and keeps a bounded number of samples.
	if k := len(p.samples); k > 0 && p.busy-p.samples[k-1].busy < p.window/64 {
		p.samples[k-1].taken = p.taken
	} else {
		p.samples = append(p.samples, sample{busy: p.busy, taken: p.taken})
	}
	// A sample that no longer holds more than what is owed never vouches again
	// (taken only grows).
	owed := float64(p.taken) - p.minRate*p.window.Seconds()
	drop := 0
	for drop < len(p.samples)-1 && float64(p.samples[drop].taken) <= owed {
		drop++
	}
	p.samples = append(p.samples[:0], p.samples[drop:]...)
}
