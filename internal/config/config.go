package config

import (
	"log/slog"
)

// Logging is shared by both binaries.
type Logging struct {
	Level slog.Level
	level string
}

func (l *Logging) vars() []Var {
	return []Var{{Name: "LOG_LEVEL", Default: "info", Usage: "debug, info, warn or error", target: &l.level}}
}

func (l *Logging) check(c *checks) {
	c.add(l.Level.UnmarshalText([]byte(l.level)) == nil, "LOG_LEVEL", "%q is not one of debug, info, warn, error", l.level)
}
