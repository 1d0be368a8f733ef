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

	"github.com/annotated-data/pipeline/internal/admin"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/consumer"
	"github.com/annotated-data/pipeline/internal/ingest"
	"github.com/annotated-data/pipeline/internal/serve"
	"github.com/annotated-data/pipeline/internal/store"
)

// version and commit are stamped in at build time with -ldflags "-X main.version=...".
var version, commit = "dev", "unknown"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "webserver:", err)
		os.Exit(exitCode(err))
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 1 {
		switch args[1] {
		case "audit":
			return runAudit(ctx, args[2:], getenv, stdout)
		case "replay":
			return runReplay(ctx, args[2:], getenv, stdout)
		case "setup-security":
			return runSetupSecurity(ctx, args[2:], getenv, stdout)
		}
	}
	program := config.Program{Name: "webserver", Summary: "ingests annotated messages from NATS JetStream into Elasticsearch. Its tools: webserver audit (prove nothing was lost) webserver replay (re-ingest a window) and webserver setup-security (create the roles and users of deploy/elasticsearch-security.json); each has --help.", Version: version, Commit: commit}
	if proceed, err := config.ParseFlags(args, stdout, program, config.IngesterVars(&config.Ingester{})); !proceed {
		return err
	}

	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.Logging.Level}))
	for _, w := range cfg.Elasticsearch.Warnings() {
		log.Warn(w)
	}
	svc, err := connect(ctx, cfg, "webserver", log, store.Webserver(cfg.Upkeep.AuditInterval > 0, cfg.Upkeep.Retention > 0))
	if err != nil {
		return err
	}
	defer svc.close()
	nc, st := svc.nc, svc.store

	if err := st.EnsureTemplate(ctx, store.TemplateSettings{
		Shards:          cfg.Index.Shards,
		Replicas:        cfg.Index.Replicas,
		RefreshInterval: cfg.Index.RefreshInterval,
		IgnoreAbove:     cfg.Index.IgnoreAbove,
		Nested:          cfg.Index.Nested,
	}); err != nil {
		return err
	}

	reg := admin.NewRegistry()
	ingestCfg := cfg.Ingest
	notices := consumer.SettledSubject(cfg.Stream, cfg.Durable)
	// A notice that cannot be sent (a NATS without permission for it) costs the
	// followers a poll interval, never a document: publish errors are ignored.
	ingestCfg.Notify = func() { _ = svc.nc.Publish(notices, nil) }
	ingester := ingest.New(svc.js, st, ingestCfg, log, ingest.NewMetrics(reg))
	admin.ElasticsearchStatus(reg, "webserver", func(ctx context.Context) (string, error) {
		h, err := st.Health(ctx)
		return string(h), err
	})

	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin listener on %s (ADMIN_ADDR): %w", cfg.AdminAddr, err)
	}
	adminSrv := serve.Server{Name: "admin", Listener: adminLn, HTTP: &http.Server{
		Handler: admin.Handler(admin.Options{Metrics: reg, Profiling: cfg.AdminProfiling},
			admin.Check{Name: "nats", Fn: func(context.Context) error {
				if !nc.IsConnected() {
					return errors.New("not connected")
				}
				return nil
			}},
			admin.Check{Name: "ingest", Fn: func(context.Context) error { return ingester.ConsumingErr() }},
			admin.Check{Name: "elasticsearch", Fn: func(ctx context.Context) error {
				if err := ingester.ElasticsearchErr(); err != nil {
					return err
				}
				// Red indices alone do not make the webserver unready: documents
				// still go to the others (today's, mostly), its bulk failures above
				// say when they do not, and it takes no traffic that another replica
				// could serve instead; unready would only hold up a rollout.
				// webserver_elasticsearch_cluster_status and its alert tell red;
				// /readyz names it, and yellow, as degraded.
				err := st.Check(ctx)
				if red := (*store.RedError)(nil); errors.As(err, &red) {
					return admin.Degraded(err)
				}
				return err
			}},
		),
		ReadHeaderTimeout: 5 * time.Second,
	}}
	upkeep := startUpkeep(ctx, svc, reg, log)
	defer upkeep()
	log.Info("webserver started", "version", version)

	// The admin server lives as long as the ingester; if it fails, the process
	// stops rather than run without health checks and metrics.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() {
		served <- serve.Run(ctx, log, time.Second, adminSrv)
		stop()
	}()
	err = cfg.Explain(ingester.Run(ctx))
	stop()
	log.Info("webserver stopped")
	return errors.Join(err, <-served)
}
