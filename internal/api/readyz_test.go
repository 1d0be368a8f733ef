package api

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

// redError is how the store reports indices that are reachable but red.
type redError struct{}

func (redError) Error() string { return "indices annotations-* are red" }
func (redError) Red() bool     { return true }

// /readyz tells a red store from an unreachable one, and is ready otherwise.
func TestReadyzTellsRedIndicesFromAnUnreachableStore(t *testing.T) {
	v := newSpecValidator(t)
	tests := []struct {
		checkErr error
		status   int
		code     string
	}{
		{nil, http.StatusOK, ""},
		{fmt.Errorf("check: %w", redError{}), http.StatusServiceUnavailable, "elasticsearch_red"},
		{errors.New("reach elasticsearch: connection refused"), http.StatusServiceUnavailable, "elasticsearch_unavailable"},
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
		if res.StatusCode != http.StatusOK {
			code = errorOf(t, body).Code
		}
		if res.StatusCode != tt.status || code != tt.code {
			t.Errorf("check %v: %d %s, want %d %s", tt.checkErr, res.StatusCode, body, tt.status, tt.code)
		}
		v.check(t, req, res, []byte(body))
	}
}
