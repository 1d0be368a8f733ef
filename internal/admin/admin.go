// Package admin serves a process's operational endpoints: /healthz (the process is
// alive), /readyz (everything it depends on is reachable) and /metrics.
package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"
)

// Check is one dependency readiness depends on.
type Check struct {
	Name string
	Fn   func(context.Context) error
}

// Options choose what the admin endpoint serves besides health.
type Options struct {
	Metrics http.Handler // served on /metrics
	// Profiling serves Go's runtime profiles on /debug/pprof/, for diagnosing a
	// live process. Off by default: profiles reveal internals and cost CPU.
	Profiling bool
}

// Handler serves /healthz, /readyz (all checks pass), /metrics and, if enabled,
// /debug/pprof/.
func Handler(opts Options, checks ...Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", opts.Metrics)
	if opts.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status, failed := http.StatusOK, map[string]string{}
		for _, c := range checks {
			if err := c.Fn(ctx); err != nil {
				status, failed[c.Name] = http.StatusServiceUnavailable, err.Error()
			}
		}
		if status != http.StatusOK {
			reply(w, status, map[string]any{"status": "not ready", "failing": failed})
			return
		}
		reply(w, status, map[string]string{"status": "ready"})
	})
	return mux
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
