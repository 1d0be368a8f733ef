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
	// and no notice from the webserver has come (default 250ms): the notices
	// after each settled batch (Hub.Wake) make the steps, and the polls only
	// catch what a lost notice would delay. A read is one small NATS request;
	// the refresh and the query follow only when the floor moved.
	PollInterval time.Duration
	// MinStepInterval is the least time between two steps (default 100ms): at
	// most ten refreshes a second of the indices per backend, however often
	// the webserver settles a batch.
	MinStepInterval time.Duration
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
	c.MinStepInterval = cmp.Or(c.MinStepInterval, 100*time.Millisecond)
	c.Buffer = cmp.Or(c.Buffer, 10000)
	c.PageSize = cmp.Or(c.PageSize, 1000)
	return c
}
