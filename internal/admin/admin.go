// Package admin serves a process's operational endpoints: /healthz (the process is
// alive), /readyz (everything it depends on is reachable) and /metrics.
package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// Check is one dependency readiness depends on.
type Check struct {
	Name string
	Fn   func(context.Context) error
}

// Handler serves /healthz, /readyz (all checks pass) and /metrics.
func Handler(metrics http.Handler, checks ...Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
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
