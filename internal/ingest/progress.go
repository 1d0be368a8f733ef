package ingest

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// reportProgress logs one line every PROGRESS_INTERVAL while there is work (new
// documents, or messages waiting), and keeps the consumer-pending gauge current.
func (in *Ingester) reportProgress(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(in.cfg.ProgressInterval)
	defer t.Stop()
	m := in.metrics
	lastIndexed, lastDone, last := int64(0), int64(0), time.Now()
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
				m.pending.Set(float64(pending))
			}
			indexed := m.nIndexed.Load()
			done := indexed + m.nDuplicates.Load() + m.nDeadLettered.Load()
			if done == lastDone && pending == 0 && m.nUnacked.Load() == 0 {
				continue
			}
			in.log.Info("progress",
				"indexed_per_sec", int(float64(indexed-lastIndexed)/now.Sub(last).Seconds()),
				"indexed", indexed,
				"duplicates", m.nDuplicates.Load(),
				"dead_lettered", m.nDeadLettered.Load(),
				"retried", m.nRetried.Load(),
				"unacked", m.nUnacked.Load(),
				"pending", pending,
			)
			lastIndexed, lastDone, last = indexed, done, now
		}
	}
}
