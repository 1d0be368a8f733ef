package config

import (
	"log/slog"
	"time"
)

// Elasticsearch is how both binaries reach the store.
type Elasticsearch struct {
	URLs        []string
	IndexPrefix string
}

func (e *Elasticsearch) vars() []Var {
	return []Var{
		{Name: "ELASTICSEARCH_URL", Default: "http://127.0.0.1:9200", Usage: "Elasticsearch address; a comma-separated list for a cluster", target: &e.URLs},
		{Name: "ES_INDEX_PREFIX", Default: "annotations", Usage: "documents live in indices named <prefix>-YYYY.MM.DD", target: &e.IndexPrefix},
	}
}

func (e *Elasticsearch) check(c *checks) {
	c.urls("ELASTICSEARCH_URL", e.URLs, "http", "https")
	c.add(validIndexPrefix(e.IndexPrefix), "ES_INDEX_PREFIX", "%q must be lowercase letters, digits, '-' or '_', not starting with '-' or '_'", e.IndexPrefix)
}

func validIndexPrefix(p string) bool {
	if p == "" || p[0] == '-' || p[0] == '_' {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

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

// Backend is the REST API's configuration.
type Backend struct {
	ListenAddr      string
	TLSMode         string
	Elasticsearch   Elasticsearch
	PageSize        int
	DefaultZone     *time.Location
	zone            string
	ShutdownTimeout time.Duration
	Logging         Logging
}

// BackendVars declares every variable the backend reads; cfg receives the values.
func BackendVars(cfg *Backend) []Var {
	vars := []Var{
		{Name: "LISTEN_ADDR", Default: ":5000", Usage: "address the API listens on", target: &cfg.ListenAddr},
		{Name: "TLS_MODE", Default: "off", Usage: "off: plain HTTP (local runs, or behind a TLS-terminating proxy)", target: &cfg.TLSMode},
	}
	vars = append(vars, cfg.Elasticsearch.vars()...)
	vars = append(vars,
		Var{Name: "API_PAGE_SIZE", Default: "1000", Usage: "documents fetched from Elasticsearch per page while streaming", target: &cfg.PageSize},
		Var{Name: "API_DEFAULT_TIMEZONE", Default: "UTC", Usage: "IANA zone for start_date/end_date written without one", target: &cfg.zone},
		Var{Name: "SHUTDOWN_TIMEOUT", Default: "30s", Usage: "how long running streams may finish after a stop signal", target: &cfg.ShutdownTimeout},
	)
	return append(vars, cfg.Logging.vars()...)
}

// LoadBackend reads and validates the backend's configuration.
func LoadBackend(getenv func(string) string) (Backend, error) {
	var cfg Backend
	c := load(getenv, BackendVars(&cfg))
	c.add(cfg.ListenAddr != "", "LISTEN_ADDR", "must not be empty")
	c.oneOf("TLS_MODE", cfg.TLSMode, "off")
	cfg.Elasticsearch.check(c)
	c.add(cfg.PageSize > 0 && cfg.PageSize <= 10000, "API_PAGE_SIZE", "must be between 1 and 10000, got %d", cfg.PageSize)
	cfg.DefaultZone = c.zone("API_DEFAULT_TIMEZONE", cfg.zone)
	c.positiveDuration("SHUTDOWN_TIMEOUT", cfg.ShutdownTimeout)
	cfg.Logging.check(c)
	return cfg, c.err()
}
