// Command backend is the REST API: it streams the stored annotated documents of a
// time range to the frontend and to browsers.
package main

import (
	"context"
	"errors"
	"flag"
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
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "backend %s: the REST API over the stored annotated documents.\n\n", version)
		fmt.Fprintf(fs.Output(), "Usage: backend [--version]\n\nConfigured by environment variables:\n\n")
		config.WriteUsage(fs.Output(), config.BackendVars(&config.Backend{}))
	}
	fs.SetOutput(stdout)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Fprintln(stdout, "backend", version, commit)
		return nil
	}

	cfg, err := config.LoadBackend(getenv)
	if err != nil {
		return fmt.Errorf("configuration (see --help):\n%w", err)
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.Logging.Level}))

	st, err := store.New(cfg.Elasticsearch)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	srv := &http.Server{
		Handler:           api.NewServer(log, st, api.Options{PageSize: cfg.PageSize, DefaultZone: cfg.DefaultZone}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	log.Info("backend listening", "version", version, "addr", ln.Addr().String(), "tls", cfg.TLSMode)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
