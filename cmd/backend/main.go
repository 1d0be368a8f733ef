// Command backend is the REST API: it streams the stored annotated documents of a
// time range to the frontend and to browsers.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/annotated-data/pipeline/internal/api"
	"github.com/annotated-data/pipeline/internal/certs"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/store"
)

// version and commit are stamped in at build time with -ldflags "-X main.version=...".
var version, commit = "dev", "unknown"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	program := config.Program{Name: "backend", Summary: "the REST API over the stored annotated documents.", Version: version, Commit: commit}
	if run, err := config.ParseFlags(args, stdout, program, config.BackendVars(&config.Backend{})); !run {
		return err
	}

	cfg, err := config.LoadBackend(getenv)
	if err != nil {
		return fmt.Errorf("configuration (see --help):\n%w", err)
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.Logging.Level}))

	metrics := api.NewMetrics()
	st, err := store.Connect(ctx, cfg.Elasticsearch, store.Read, log, store.WithQueryObserver(metrics.ObserveQuery))
	if err != nil {
		return err
	}
	handler, err := api.NewServer(log, cfg, st, metrics)
	if err != nil {
		return err
	}
	tlsSetup, err := certs.New(cfg.TLS, cfg.ListenAddr, log)
	if err != nil {
		return err
	}

	// Listen before serving anything, so a taken port stops the start with a clear error.
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	servers := []*server{{name: "api", ln: ln, srv: newHTTPServer(handler, tlsSetup.TLSConfig, log, cfg.StallTimeout)}}
	if tlsSetup.HTTPHandler != nil {
		httpLn, err := net.Listen("tcp", cfg.TLS.ACMEHTTPAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (ACME_HTTP_ADDR): %w", cfg.TLS.ACMEHTTPAddr, err)
		}
		// Redirects and challenge answers carry the same headers as the API; HSTS
		// means nothing over plain HTTP.
		acme := api.SecurityHeaders(false)(tlsSetup.HTTPHandler)
		servers = append(servers, &server{name: "acme-http", ln: httpLn, srv: newHTTPServer(acme, nil, log, cfg.StallTimeout)})
	}

	served := make(chan error, len(servers))
	for _, s := range servers {
		log.Info("backend listening", "version", version, "server", s.name, "addr", s.ln.Addr().String(), "tls", s.srv.TLSConfig != nil)
		go func() {
			if s.srv.TLSConfig != nil {
				served <- fmt.Errorf("serve %s: %w", s.name, s.srv.ServeTLS(s.ln, "", ""))
			} else {
				served <- fmt.Errorf("serve %s: %w", s.name, s.srv.Serve(s.ln))
			}
		}()
	}
	var failed error
	select {
	case failed = <-served:
	case <-ctx.Done():
	}

	// Stop accepting; let running streams finish, up to SHUTDOWN_TIMEOUT; then cut
	// the rest, whose handlers see their contexts end and close their points in time.
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	for _, s := range servers {
		if err := s.srv.Shutdown(shutdownCtx); err != nil {
			log.Warn("streams still running at the shutdown timeout were cut", "server", s.name, "err", err)
			s.srv.Close()
		}
	}
	for range servers {
		// Each Serve returns http.ErrServerClosed once shut down.
		if err := <-served; !errors.Is(err, http.ErrServerClosed) && failed == nil {
			failed = err
		}
	}
	return failed
}

type server struct {
	name string
	ln   net.Listener
	srv  *http.Server
}

// newHTTPServer bounds what a slow or idle client can hold: the time to send its
// headers, their size, and an idle keep-alive connection. There is deliberately no
// ReadTimeout or WriteTimeout: either would cut a long stream (net/http applies
// ReadTimeout's deadline to the whole connection, and its expiry cancels the
// request). A stream instead ends when its client disconnects or stops reading
// (stall, STREAM_STALL_TIMEOUT).
//
// Over HTTP/2 the handler's write deadline only queues a reset of its stream,
// which cannot be sent while the connection's writes are stuck behind a client
// that reads nothing; WriteByteTimeout closes such a connection instead, and
// with it every stream it holds. It is extended by each byte written, so a slow
// but steady reader keeps its connection.
func newHTTPServer(h http.Handler, tlsConfig *tls.Config, log *slog.Logger, stall time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// The API answers headers over its own limit (api.MaxHeaderBytes) with a
		// 431 that carries its security headers; net/http's own 431, for headers
		// beyond this ceiling, carries none.
		MaxHeaderBytes: 1 << 20,
		HTTP2:          &http.HTTP2Config{WriteByteTimeout: stall},
		// TLS handshake failures from scanners and the like: noise unless debugging.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
