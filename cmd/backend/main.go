// Command backend is the REST API: it streams the stored annotated documents of a
// time range to the frontend and to browsers.
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/admin"
	"github.com/annotated-data/pipeline/internal/api"
	"github.com/annotated-data/pipeline/internal/certcache"
	"github.com/annotated-data/pipeline/internal/certs"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/consumer"
	"github.com/annotated-data/pipeline/internal/follow"
	"github.com/annotated-data/pipeline/internal/natsconn"
	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/serve"
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
	if proceed, err := config.ParseFlags(args, stdout, program, config.BackendVars(&config.Backend{})); !proceed {
		return err
	}

	cfg, err := config.LoadBackend(getenv)
	if err != nil {
		return fmt.Errorf("configuration (see --help):\n%w", err)
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.Logging.Level}))

	registry := admin.NewRegistry()
	metrics := api.NewMetrics(registry)
	for _, w := range cfg.Elasticsearch.Warnings() {
		log.Warn(w)
	}
	esCfg := cfg.Elasticsearch.Config
	esCfg.Observe = metrics.ObserveQuery
	st, err := store.Connect(ctx, esCfg, store.Backend(), log)
	if err != nil {
		return cfg.Elasticsearch.Explain(err)
	}
	admin.ElasticsearchStatus(registry, "backend", func(ctx context.Context) (string, error) {
		h, err := st.Health(ctx)
		return string(h), err
	})
	// NATS is optional: without it the backend serves stored ranges only.
	var nc *nats.Conn
	if cfg.NATS.Enabled() {
		natsCfg := cfg.NATS.Config
		natsCfg.Name = "backend"
		if nc, err = natsconn.Connect(ctx, natsCfg, log); err != nil {
			return cfg.NATS.Explain(err)
		}
		defer nc.Close()
	}
	var following api.Hub // nil, not a nil *follow.Hub: without NATS, follow=true is refused
	if nc != nil {
		webserver, err := consumer.New(nc, cfg.Follow.Stream, cfg.Follow.Durable)
		if err != nil {
			return err
		}
		hub := follow.NewHub(cfg.Follow, webserver, st, log, metrics.ObserveFollowStep)
		following = followHub{Hub: hub, Consumer: webserver}
		// A permission error arrives asynchronously, in the connection's error
		// log; the polls deliver everything meanwhile, only later.
		if _, err := webserver.WhenSettled(hub.Wake); err != nil {
			return err
		}
		// Follows never end by themselves: at a stop they end at once, with a
		// record saying so, and their clients resume elsewhere.
		go func() {
			<-ctx.Done()
			hub.Close()
		}()
	}

	tlsCfg := cfg.TLS
	tlsCfg.ObserveExpiry = certs.ExpiryGauge(registry)
	if cfg.TLS.Mode == certs.Autocert && cfg.TLSCache.Kind == config.TLSCacheNATS {
		if tlsCfg.Cache, err = openCertCache(ctx, nc, cfg.TLSCache.Config, log); err != nil {
			return err
		}
	}

	handler, err := api.NewServer(log, cfg.API, st, following, metrics)
	if err != nil {
		return err
	}
	tlsSetup, err := certs.New(tlsCfg, cfg.ListenAddr, log)
	if err != nil {
		return err
	}

	// Listen before serving anything, so a taken port stops the start with a clear error.
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (LISTEN_ADDR): %w", cfg.ListenAddr, err)
	}
	servers := []serve.Server{{Name: "api", Listener: ln, HTTP: newHTTPServer(handler, tlsSetup.TLSConfig, log, cfg.StallTimeout)}}
	if tlsSetup.HTTPHandler != nil {
		httpLn, err := net.Listen("tcp", cfg.TLS.ACMEHTTPAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (ACME_HTTP_ADDR): %w", cfg.TLS.ACMEHTTPAddr, err)
		}
		// Redirects and challenge answers carry the same headers as the API; HSTS
		// means nothing over plain HTTP.
		acme := api.SecurityHeaders(false)(tlsSetup.HTTPHandler)
		servers = append(servers, serve.Server{Name: "acme-http", Listener: httpLn, HTTP: newHTTPServer(acme, nil, log, cfg.StallTimeout)})
	}
	log.Info("backend started", "version", version)

	// Running streams may finish for up to SHUTDOWN_TIMEOUT after a stop; the rest
	// are cut, and their handlers close their points in time.
	return serve.Run(ctx, log, cfg.ShutdownTimeout, servers...)
}

// followHub is what the API follows with (api.Hub): the hub's followers, and
// from the webserver's consumer, the last message stored before an end_date.
type followHub struct {
	*follow.Hub
	*consumer.Consumer
}

// Follow subscribes with the hub, and hands out its *follow.Follower as the
// api.Follower it is.
func (h followHub) Follow(ctx context.Context, pos uint64, from, to time.Time, fields []string, filter any, send func(pipeline.Page) error) (api.Follower, error) {
	f, err := h.Hub.Follow(ctx, pos, from, to, fields, filter, send)
	if err != nil {
		return nil, err // a nil *follow.Follower would make a non-nil api.Follower
	}
	return f, nil
}

// openCertCache opens the certificate cache that replicas share (TLS_CACHE=nats)
// on the backend's one NATS connection.
func openCertCache(ctx context.Context, nc *nats.Conn, cfg certcache.Config, log *slog.Logger) (*certcache.Cache, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("TLS_CACHE=nats: %w", err)
	}
	cache, err := certcache.Open(ctx, js, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("TLS_CACHE=nats: %w", err)
	}
	return cache, nil
}

// newHTTPServer bounds what a slow or idle client can hold: the time to send its
// headers, their size, and an idle keep-alive connection. There is deliberately no
// ReadTimeout or WriteTimeout: either would cut a long stream (net/http applies
// ReadTimeout's deadline to the whole connection, and its expiry cancels the
// request). A stream instead ends when its client disconnects or takes less than
// STREAM_MIN_RATE over STREAM_STALL_TIMEOUT (see the api package's pace).
//
// Over HTTP/2 the handler's write deadline only queues a reset of its stream,
// which cannot be sent while the connection's writes are stuck behind a client
// that reads nothing; WriteByteTimeout closes such a connection instead, and
// with it every stream it holds. It is extended by each byte written, so a
// steady reader, whose socket buffers pause it for less than STREAM_STALL_TIMEOUT
// at a time, keeps its connection.
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
