// Package admin serves a process's operational endpoints: /healthz (the process is
// alive), /readyz (everything it depends on is reachable) and /metrics, and holds
// what the backend's public health routes share with them.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a process's one Prometheus registry, holding the Go
// runtime's and the process's own metrics; main owns it and hands it to whatever
// registers metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Check is one dependency readiness depends on.
type Check struct {
	Name string
	Fn   func(context.Context) error
}

// checkTimeout bounds a readiness probe: a dependency slower than this counts as
// down for the probe that asked.
const checkTimeout = 2 * time.Second

// Degraded marks what a check found short of whole that still leaves the process
// able to do its job: readiness stays 200 and names it under "degraded" (the
// indices written to red while others take the documents, say). An error is
// degraded when it, or one it wraps, has a Degraded method that says true, as
// the store's yellow indices do.
func Degraded(err error) error { return &degraded{err} }

type degraded struct{ err error }

func (d *degraded) Error() string  { return d.err.Error() }
func (d *degraded) Unwrap() error  { return d.err }
func (d *degraded) Degraded() bool { return true }

func isDegraded(err error) bool {
	var d interface{ Degraded() bool }
	return errors.As(err, &d) && d.Degraded()
}

// Probe runs every check and returns, by name, the failures and what is only
// degraded ([Degraded]); each map is nil when it would be empty. The process is
// ready when failed is nil.
func Probe(ctx context.Context, checks ...Check) (failed, degraded map[string]error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	add := func(m *map[string]error, name string, err error) {
		if *m == nil {
			*m = map[string]error{}
		}
		(*m)[name] = err
	}
	for _, c := range checks {
		switch err := c.Fn(ctx); {
		case err == nil:
		case isDegraded(err):
			add(&degraded, c.Name, err)
		default:
			add(&failed, c.Name, err)
		}
	}
	return failed, degraded
}

// Healthz answers liveness probes: the process runs and serves HTTP.
func Healthz(w http.ResponseWriter, _ *http.Request) {
	reply(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Options choose what the admin endpoint serves besides health.
type Options struct {
	Metrics prometheus.Gatherer // served on /metrics
	// Profiling serves Go's runtime profiles on /debug/pprof/, for diagnosing a
	// live process. Off by default: profiles reveal internals and cost CPU.
	Profiling bool
}

// Handler serves /healthz, /readyz (all checks pass, else 503 naming what fails
// and why; what is degraded is named in a 200), /metrics and, if enabled,
// /debug/pprof/. It belongs on an address only operators reach: readiness
// failures carry their causes.
func Handler(opts Options, checks ...Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Metrics, promhttp.HandlerOpts{}))
	if opts.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", Healthz)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		failed, degraded := Probe(r.Context(), checks...)
		if failed == nil {
			body := map[string]any{"status": "ready"}
			if degraded != nil {
				body["degraded"] = messages(degraded)
			}
			reply(w, http.StatusOK, body)
			return
		}
		body := map[string]any{"status": "not ready", "failing": messages(failed)}
		if degraded != nil {
			body["degraded"] = messages(degraded)
		}
		reply(w, http.StatusServiceUnavailable, body)
	})
	return mux
}

func messages(errs map[string]error) map[string]string {
	m := make(map[string]string, len(errs))
	for name, err := range errs {
		m[name] = err.Error()
	}
	return m
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
