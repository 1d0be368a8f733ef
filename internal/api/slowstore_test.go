package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// slowError is how the store reports that Elasticsearch did not answer in time.
type slowError struct{ after time.Duration }

func (e slowError) Error() string {
	return fmt.Sprintf("did not open point in time within %s", e.after)
}
func (e slowError) TimedOut() time.Duration { return e.after }

// A store that is slow, not down, is told apart: 504 elasticsearch_timeout,
// not the 503 elasticsearch_unavailable of an outage.
func TestASlowStoreIsA504TimeoutNotA503Outage(t *testing.T) {
	v := newSpecValidator(t)
	srv, _ := serve(t, &fakeExporter{err: fmt.Errorf("open point in time on annotations-*: %w", slowError{10 * time.Second})}, Config{})
	for _, path := range []string{"/getJsonStream", "/getStream"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path+someRange, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := readAll(t, res)
		e := errorOf(t, body)
		if res.StatusCode != http.StatusGatewayTimeout || e.Code != "elasticsearch_timeout" || res.Header.Get("Retry-After") != "5" ||
			!strings.Contains(e.Message, "slow") || !strings.Contains(e.Message, "10s") {
			t.Errorf("%s: %d Retry-After=%q %s, want 504 elasticsearch_timeout saying the store is slow (10s) with Retry-After 5",
				path, res.StatusCode, res.Header.Get("Retry-After"), body)
		}
		v.check(t, req, res, []byte(body))
	}
}
