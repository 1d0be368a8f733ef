// Package serve runs a process's HTTP servers and stops them gracefully: the one
// way both binaries serve, so a listener that fails is never dropped unnoticed.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Server is one listener and the server that answers on it.
type Server struct {
	Name     string // for logs and errors: "api", "admin", …
	Listener net.Listener
	HTTP     *http.Server // serves TLS when its TLSConfig is set
}

// Run serves every server until ctx ends or one of them fails. It then stops
// accepting connections on all of them, lets requests in flight finish for up to
// grace, cuts the rest (whose handlers see their contexts end), and returns the
// first failure, or nil after a requested stop.
func Run(ctx context.Context, log *slog.Logger, grace time.Duration, servers ...Server) error {
	served := make(chan error, len(servers))
	for _, s := range servers {
		log.Info("listening", "server", s.Name, "addr", s.Listener.Addr().String(), "tls", s.HTTP.TLSConfig != nil)
		go func() {
			var err error
			if s.HTTP.TLSConfig != nil {
				err = s.HTTP.ServeTLS(s.Listener, "", "")
			} else {
				err = s.HTTP.Serve(s.Listener)
			}
			served <- fmt.Errorf("serve %s on %s: %w", s.Name, s.Listener.Addr(), err)
		}()
	}
	var failed error
	select {
	case failed = <-served:
	case <-ctx.Done():
	}

	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	for _, s := range servers {
		if err := s.HTTP.Shutdown(shutdownCtx); err != nil {
			log.Warn("requests still running at the shutdown timeout were cut", "server", s.Name, "err", err)
			s.HTTP.Close()
		}
	}
	remaining := len(servers)
	if failed != nil {
		remaining--
	}
	for range remaining {
		// Each Serve returns http.ErrServerClosed once shut down.
		if err := <-served; !errors.Is(err, http.ErrServerClosed) && failed == nil {
			failed = err
		}
	}
	return failed
}
