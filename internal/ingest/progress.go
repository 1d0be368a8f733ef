package ingest

import (
	"context"
	"time"
)

// reportProgress logs one line every Config.ProgressInterval while there is work
// (new documents, or messages waiting), and keeps the consumer-pending gauge
// current.
func (in *Ingester) reportProgress(ctx context.Context, cons consumer) {
	t := time.NewTicker(in.cfg.ProgressInterval)
	defer t.Stop()
	var last figures
	lastAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			var pending uint64
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			info, err := cons.Info(ictx)
			cancel()
			if err == nil {
				pending = info.NumPending
				in.metrics.pending.Set(float64(pending))
			}
			f := in.metrics.figures()
			if f.done() == last.done() && pending == 0 && f.unacked == 0 {
				continue
			}
			in.log.Info("progress",
				"indexed_per_sec", int(float64(f.indexed-last.indexed)/now.Sub(lastAt).Seconds()),
				"indexed", f.indexed,
				"duplicates", f.duplicates,
				"dead_lettered", f.deadLettered,
				"retried", f.retried,
				"unacked", f.unacked,
				"pending", pending,
			)
			last, lastAt = f, now
		}
	}
}

// done counts the messages settled for good.
func (f figures) done() int64 { return f.indexed + f.duplicates + f.deadLettered }
