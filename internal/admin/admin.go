// Package admin serves a process's operational endpoints: /healthz (the process is
// alive), /readyz (everything it depends on is reachable) and /metrics, and holds
// what the backend's public health routes share with them.
package admin

import (
	"context"
	"encoding/json"
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

// Probe runs every check and returns the failures by name, nil when all pass.
func Probe(ctx context.Context, checks ...Check) map[string]error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	var failed map[string]error
	for _, c := range checks {
		if err := c.Fn(ctx); err != nil {
			if failed == nil {
				failed = map[string]error{}
			}
			failed[c.Name] = err
		}
	}
	return failed
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
// and why), /metrics and, if enabled, /debug/pprof/. It belongs on an address
// only operators reach: readiness failures carry their causes.
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
		failed := Probe(r.Context(), checks...)
		if failed == nil {
			reply(w, http.StatusOK, map[string]string{"status": "ready"})
			return
		}
		causes := map[string]string{}
		for name, err := range failed {
			causes[name] = err.Error()
		}
		reply(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "failing": causes})
	})
	return mux
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
