package follow

import (
	"cmp"
	"time"
)

// Config says whose progress a follow waits for and how it polls. The zero value
// of a field takes the default beside it.
type Config struct {
	Stream  string // the webserver's stream (default ANNOTATIONS)
	Durable string // the webserver's durable consumer, whose ack floor is read (default webserver)
	// PollInterval is how often the ack floor is read while someone follows
	// (default 250ms): new documents reach followers at most this much later
	// than they could. A read is one small NATS request; the refresh and the
	// query follow only when the floor moved, which the webserver's batches
	// (BULK_MAX_WAIT) pace.
	PollInterval time.Duration
	// Buffer is the most documents held for one follower that has not taken
	// them yet (default 10000); a follower further behind is cut.
	Buffer int
	// PageSize is the most documents one live query returns (default 1000).
	PageSize int
}

func (c Config) withDefaults() Config {
	c.Stream = cmp.Or(c.Stream, "ANNOTATIONS")
	c.Durable = cmp.Or(c.Durable, "webserver")
	c.PollInterval = cmp.Or(c.PollInterval, 250*time.Millisecond)
	c.Buffer = cmp.Or(c.Buffer, 10000)
	c.PageSize = cmp.Or(c.PageSize, 1000)
	return c
}
