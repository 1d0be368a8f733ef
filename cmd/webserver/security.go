package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/annotated-data/pipeline/internal/dial"
	"github.com/annotated-data/pipeline/internal/essecurity"
	"github.com/annotated-data/pipeline/internal/store"
)

const setupSecurityUsage = `Usage: webserver setup-security [--file F] [--secrets DIR]

Creates or updates, in a cluster with Elasticsearch's security on, the roles,
users and API keys that the file declares (deploy/elasticsearch-security.json:
one user per binary and one for operators, each with only the privileges its job
takes). ${ES_INDEX_PREFIX} in the file's index names becomes ES_INDEX_PREFIX.

Run it as a user that may manage security (the built-in elastic user), set with
ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD(_FILE), or an API key. A new
cluster refuses even the right password for a few seconds after it first
answers, while it creates its security index: a refusal is retried for
ELASTICSEARCH_STARTUP_TIMEOUT before it is reported. Each user's password is
read from the file named by its password_secret in DIR; each API key is created
once and its encoded value written to the file named by its secret in DIR (mode
0600). Running it again changes nothing unless the file or
the passwords changed. It needs no NATS.

Exit status: 0 when everything in the file exists as declared; 1 otherwise.`

func runSetupSecurity(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := toolFlags("setup-security", setupSecurityUsage, stdout)
	file := fs.String("file", "deploy/elasticsearch-security.json", "the declarative file of roles, users and API keys")
	secrets := fs.String("secrets", "/run/secrets", "directory of the users' passwords and the API keys' files")
	if done, err := parse(fs, args); done {
		return err
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	declared, err := essecurity.Load(*file, cfg.Elasticsearch.IndexPrefix)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// A new cluster refuses even the right password until its security index is
	// ready (Elastic's own compose example loops on it too): wait a refusal out as
	// an unreachable cluster is waited out.
	var st *store.Store
	err = dial.Wait(ctx, log, "elasticsearch", cfg.Elasticsearch.StartupTimeout, 2*time.Second, func(ctx context.Context) error {
		var err error
		st, err = store.Connect(ctx, cfg.Elasticsearch.Config, store.SecurityAdmin(), log)
		var refused *dial.RefusedError
		if errors.As(err, &refused) {
			return dial.Temporary(err)
		}
		return err
	})
	if err != nil {
		return cfg.Elasticsearch.Explain(err)
	}
	if err := essecurity.Apply(ctx, st.Transport(), declared, essecurity.Dir(*secrets), stdout); err != nil {
		return fmt.Errorf("setup-security: %w", err)
	}
	return nil
}
