// Command webserver is the ingester: it pulls annotated JSON messages from a NATS
// JetStream stream and bulk-indexes them into Elasticsearch. (The name is the one the
// original system's operations documents use.)
package main

import (
	"context"
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

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/annotated-data/pipeline/internal/admin"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/ingest"
	"github.com/annotated-data/pipeline/internal/natsconn"
	"github.com/annotated-data/pipeline/internal/store"
)

// version and commit are stamped in at build time with -ldflags "-X main.version=...".
var version, commit = "dev", "unknown"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "webserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	program := config.Program{Name: "webserver", Summary: "ingests annotated messages from NATS JetStream into Elasticsearch.", Version: version, Commit: commit}
	if run, err := config.ParseFlags(args, stdout, program, config.WebserverVars(&config.Webserver{})); !run {
		return err
	}

	cfg, err := config.LoadWebserver(getenv)
	if err != nil {
		return fmt.Errorf("configuration (see --help):\n%w", err)
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.Logging.Level}))

	nc, err := natsconn.Connect(ctx, cfg.NATS, "webserver", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	st, err := store.Connect(ctx, cfg.Elasticsearch, store.Write, log, store.WithInterval(store.Interval(cfg.Index.Interval)))
	if err != nil {
		return err
	}
	if err := st.EnsureTemplate(ctx, store.TemplateSettings{
		Shards:          cfg.Index.Shards,
		Replicas:        cfg.Index.Replicas,
		RefreshInterval: cfg.Index.RefreshInterval,
		IgnoreAbove:     cfg.Index.IgnoreAbove,
	}); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ingester := ingest.New(js, st, cfg, log, ingest.NewMetrics(reg))

	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	adminSrv := &http.Server{
		Handler: admin.Handler(admin.Options{Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), Profiling: cfg.AdminProfiling},
			admin.Check{Name: "nats", Fn: func(context.Context) error {
				if !nc.IsConnected() {
					return errors.New("not connected")
				}
				return nil
			}},
			admin.Check{Name: "elasticsearch", Fn: func(ctx context.Context) error {
				if err := ingester.ElasticsearchErr(); err != nil {
					return err
				}
				return st.Check(ctx)
			}},
		),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go adminSrv.Serve(adminLn)
	defer adminSrv.Close()
	log.Info("webserver started", "version", version, "admin", adminLn.Addr().String())

	err = ingester.Run(ctx)
	log.Info("webserver stopped")
	return err
}
