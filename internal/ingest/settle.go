package ingest

import (
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// settlement is how a fetched message leaves the ingester's hands.
type settlement int

const (
	ack      settlement = iota // its document is stored, or already was
	term                       // its dead letter is stored: never deliver it again
	nak                        // hand it back for redelivery at once (shutdown)
	nakLater                   // hand it back after a pause (its dead letter could not be stored)
)

var settlementNames = [...]string{ack: "ack", term: "term", nak: "nak", nakLater: "nak"}

func (s settlement) String() string { return settlementNames[s] }

// nakLaterDelay is how long a message whose dead letter could not be published
// waits before it comes back: long enough for a passing NATS hiccup to pass.
const nakLaterDelay = 2 * time.Second

// settler is how the messages an ingester fetched leave its hands. The durable
// consumer's are settled with NATS (durable, below); a replay's ordered consumer
// acknowledges nothing, so a replay only counts them (replaying, replay.go).
type settler interface {
	// settle ends m's time in the ingester's hands as s says.
	settle(m jetstream.Msg, s settlement)
	// keepInProgress keeps msgs from being redelivered while they are worked
	// on, until stop is called.
	keepInProgress(msgs []jetstream.Msg) (stop func())
	// alreadyDeadLettered reports whether m has a dead letter from before, and
	// so is terminated without a second one.
	alreadyDeadLettered(m jetstream.Msg) bool
	// batchSettled is told when every message of a batch is settled.
	batchSettled()
}

// settle is the one place a message is acked, terminated or handed back. Every
// path through the ingester calls it exactly once per message it fetched; it
// releases the message from the unacked count.
func (in *Ingester) settle(m jetstream.Msg, s settlement) {
	in.settler.settle(m, s)
	in.metrics.unacked.Dec()
}

// durable settles the messages of the durable consumer with NATS, and reports a
// failure to tell the server. Such a failure loses nothing: the server
// redelivers the message after AckWait, and op_type=create turns the redelivery
// into a duplicate.
type durable struct {
	ackWait  time.Duration
	failures *settleFailures
	notify   func() // Config.Notify
}

// batchSettled tells Config.Notify that the ack floor may have moved. The acks
// went out on the same connection before the notice does, so the server has
// them first; and a notice that comes early only makes a follower read the
// floor once more.
func (d *durable) batchSettled() {
	if d.notify != nil {
		d.notify()
	}
}

func (d *durable) settle(m jetstream.Msg, s settlement) {
	var err error
	switch s {
	case ack:
		// No need to wait for the server's confirmation (DoubleAck): a lost ack
		// only means a redelivery.
		err = m.Ack()
	case term:
		err = m.Term()
	case nak:
		err = m.Nak()
	case nakLater:
		err = m.NakWithDelay(nakLaterDelay)
	}
	d.failures.report(s, err)
}

// keepInProgress keeps msgs in progress every third of AckWait.
func (d *durable) keepInProgress(msgs []jetstream.Msg) (stop func()) {
	return keepInProgress(msgs, d.ackWait/3)
}

// alreadyDeadLettered is false: should the durable deliver again a message
// whose dead letter was published (a crash before its term), the dead letter's
// own id, its stream position, stores it once (deadletter.go).
func (d *durable) alreadyDeadLettered(jetstream.Msg) bool { return false }

// settleFailures logs failures to settle once when they start and once when they
// stop, per kind, rather than once per message: when NATS is unreachable every
// message of a batch fails the same way.
type settleFailures struct {
	log     *slog.Logger
	metrics *Metrics

	mu      sync.Mutex
	failing [len(settlementNames)]int // failures in a row, by settlement
}

func (f *settleFailures) report(s settlement, err error) {
	if err != nil {
		f.metrics.settleFailures.WithLabelValues(s.String()).Inc()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case err != nil && f.failing[s] == 0:
		f.log.Warn("telling nats of a settled message failed; it will be redelivered and acked as a duplicate", "action", s.String(), "err", err)
		f.failing[s]++
	case err != nil:
		f.failing[s]++
	case f.failing[s] > 0:
		f.log.Info("telling nats of settled messages works again", "action", s.String(), "failed", f.failing[s])
		f.failing[s] = 0
	}
}
