package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
)

// redError is how the store reports indices that are reachable but red.
type redError struct{}

func (redError) Error() string { return "indices annotations-* are red" }
func (redError) Red() bool     { return true }

// yellowError is how the store reports indices with a replica missing.
type yellowError struct{}

func (yellowError) Error() string  { return "indices annotations-* are yellow" }
func (yellowError) Degraded() bool { return true }

// /readyz tells a red store from an unreachable one, and is ready otherwise;
// yellow is ready, and said to be degraded, without the store's own words.
func TestReadyzTellsRedIndicesFromAnUnreachableStore(t *testing.T) {
	v := newSpecValidator(t)
	tests := []struct {
		checkErr error
		status   int
		code     string
		degraded string
	}{
		{nil, http.StatusOK, "", ""},
		{yellowError{}, http.StatusOK, "", "a replica of the document store is missing: every document is served, with less redundancy"},
		{fmt.Errorf("check: %w", redError{}), http.StatusServiceUnavailable, "elasticsearch_red", ""},
		{errors.New("reach elasticsearch: connection refused"), http.StatusServiceUnavailable, "elasticsearch_unavailable", ""},
	}
	for _, tt := range tests {
		srv, _ := serve(t, &fakeExporter{checkErr: tt.checkErr}, Config{})
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/readyz", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := readAll(t, res)
		code := ""
		var ready struct {
			Degraded map[string]string `json:"degraded"`
		}
		if res.StatusCode != http.StatusOK {
			code = errorOf(t, body).Code
		} else if err := json.Unmarshal([]byte(body), &ready); err != nil {
			t.Fatalf("check %v: %s: %v", tt.checkErr, body, err)
		}
		if res.StatusCode != tt.status || code != tt.code || ready.Degraded["elasticsearch"] != tt.degraded {
			t.Errorf("check %v: %d %s, want %d %s, degraded %q", tt.checkErr, res.StatusCode, body, tt.status, tt.code, tt.degraded)
		}
		v.check(t, req, res, []byte(body))
	}
}
