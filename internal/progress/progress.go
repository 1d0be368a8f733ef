// Package progress shows how far a long job has come: a bar with rate and ETA,
// redrawn in place, when a person watches a terminal; a plain line every few seconds
// when the output goes to a log.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Reporter tracks a count towards an optional total and reports it on w.
type Reporter struct {
	w        io.Writer
	what     string
	total    int64 // 0 when unknown
	terminal bool
	every    time.Duration

	mu    sync.Mutex
	done  int64
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

// New starts reporting on w the progress of counting what (e.g. "messages") up to
// total (0 if unknown). Call Finish when the work ends.
func New(w io.Writer, what string, total int64) *Reporter {
	r := &Reporter{w: w, what: what, total: total, terminal: IsTerminal(w), start: time.Now(), stop: make(chan struct{})}
	r.every = 5 * time.Second
	if r.terminal {
		r.every = 200 * time.Millisecond
	}
	r.wg.Go(r.loop)
	return r
}

// Add counts n more.
func (r *Reporter) Add(n int) {
	r.mu.Lock()
	r.done += int64(n)
	r.mu.Unlock()
}

// Finish stops reporting and prints the final state.
func (r *Reporter) Finish() {
	close(r.stop)
	r.wg.Wait()
	r.print(true)
}

func (r *Reporter) loop() {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.print(false)
		}
	}
}

func (r *Reporter) print(final bool) {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	elapsed := time.Since(r.start)
	line := Line(r.what, done, r.total, elapsed)
	switch {
	case r.terminal && final:
		fmt.Fprintf(r.w, "\r%s\033[K\n", line)
	case r.terminal:
		fmt.Fprintf(r.w, "\r%s\033[K", line)
	default:
		fmt.Fprintln(r.w, line)
	}
}

// Line renders one progress report: a bar (when the total is known), the count,
// the rate and the time left.
func Line(what string, done, total int64, elapsed time.Duration) string {
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(done) / s
	}
	if total <= 0 {
		return fmt.Sprintf("%d %s  %.0f/s  %s", done, what, rate, elapsed.Round(time.Second))
	}
	const width = 30
	frac := min(float64(done)/float64(total), 1)
	filled := int(frac * width)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	if filled > 0 && filled < width {
		bar = strings.Repeat("=", filled-1) + ">" + strings.Repeat(" ", width-filled)
	}
	eta := "?"
	if rate > 0 {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second).String()
		if done >= total {
			eta = "0s"
		}
	}
	return fmt.Sprintf("[%s] %3.0f%%  %d/%d %s  %.0f/s  ETA %s", bar, frac*100, done, total, what, rate, eta)
}

// IsTerminal reports whether w is a character device, such as a person's terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
