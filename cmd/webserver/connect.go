package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/natsconn"
	"github.com/annotated-data/pipeline/internal/store"
)

// loadConfig reads the webserver's environment, which its tools share.
func loadConfig(getenv func(string) string) (config.Ingester, error) {
	cfg, err := config.LoadIngester(getenv)
	if err != nil {
		return cfg, fmt.Errorf("configuration (see --help):\n%w", err)
	}
	return cfg, nil
}

// services are what the webserver and its tools talk to.
type services struct {
	cfg   config.Ingester
	nc    *nats.Conn
	js    jetstream.JetStream
	store *store.Store
}

// close closes the NATS connection; the store holds none open.
func (s *services) close() { s.nc.Close() }

// connect reaches NATS, calling itself name there, and then Elasticsearch with
// access, as cfg says; a failure to reach either is explained by the variables
// that fix it.
func connect(ctx context.Context, cfg config.Ingester, name string, log *slog.Logger, access store.Access) (*services, error) {
	natsCfg := cfg.NATS.Config
	natsCfg.Name = name
	nc, err := natsconn.Connect(ctx, natsCfg, log)
	if err != nil {
		return nil, cfg.NATS.Explain(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	esCfg := cfg.Elasticsearch.Config
	esCfg.Interval = store.Interval(cfg.Index.Interval)
	st, err := store.Connect(ctx, esCfg, access, log)
	if err != nil {
		nc.Close()
		return nil, cfg.Elasticsearch.Explain(err)
	}
	return &services{cfg: cfg, nc: nc, js: js, store: st}, nil
}
