package api

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// These tests hold the API to what strict HTTP clients expect of any server.

func TestHEADIsAnsweredWhereverGETIs(t *testing.T) {
	st := &fakeExporter{pages: []pipeline.Page{page(`{"id":"a"}`)}}
	srv, _ := serve(t, st, Config{})
	for _, path := range []string{"/healthz", "/readyz", "/openapi.json", "/metrics", "/getJsonStream" + someRange, "/getStream" + someRange, "/getCounts" + someRange} {
		getRes := get(t, srv.URL+path)
		io.ReadAll(getRes.Body)
		req, _ := http.NewRequest(http.MethodHead, srv.URL+path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != getRes.StatusCode || res.Header.Get("Content-Type") != getRes.Header.Get("Content-Type") || len(body) != 0 {
			t.Errorf("HEAD %s: %d %q with %d bytes of body, want GET's %d %q and no body",
				path, res.StatusCode, res.Header.Get("Content-Type"), len(body), getRes.StatusCode, getRes.Header.Get("Content-Type"))
		}
	}
	if n := len(st.ranges); n != 2 {
		t.Errorf("the store was asked for %d exports, want 2 (for the GETs; a HEAD sends no documents)", n)
	}

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/healthz", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Allow"); got != "GET, HEAD" {
		t.Errorf("405 Allow = %q, want \"GET, HEAD\"", got)
	}
}

func TestALongUnknownParameterNameIsNotEchoedInFull(t *testing.T) {
	srv, logs := serve(t, &fakeExporter{}, Config{})
	name := strings.Repeat("x", 60000)
	res := get(t, srv.URL+"/getJsonStream"+someRange+"&"+name+"=1")
	body, _ := readAll(t, res)
	if res.StatusCode != http.StatusBadRequest || errorOf(t, body).Code != "unknown_parameter" {
		t.Fatalf("%d %.200s, want 400 unknown_parameter", res.StatusCode, body)
	}
	if len(body) > 1024 {
		t.Errorf("the error body is %d bytes, want the name shortened (at most 1 KB in all)", len(body))
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if len(line) > 2048 {
			t.Errorf("a log line of %d bytes: %.200s…", len(line), line)
		}
	}
}

func TestAnUnreadableQueryStringIsSaidToBe(t *testing.T) {
	srv, _ := serve(t, &fakeExporter{}, Config{})
	for _, query := range []string{
		"?start_date=%ZZ&end_date=2023-03-10",
		"?start_date=2023-03-09;end_date=2023-03-10",
	} {
		res := get(t, srv.URL+"/getJsonStream"+query)
		body, _ := readAll(t, res)
		if e := errorOf(t, body); res.StatusCode != http.StatusBadRequest || e.Code != "invalid_query" || !strings.Contains(e.Message, "query string") {
			t.Errorf("%s: %d %s, want 400 invalid_query saying the query string cannot be read", query, res.StatusCode, body)
		}
	}
}

// RFC 3986 (6.2.2.2): a percent-encoded unreserved character is the character
// itself. Reserved ones (an encoded "/") stay distinct.
func TestPercentEncodedLettersNameTheSameEndpoint(t *testing.T) {
	srv, _ := serve(t, &fakeExporter{pages: []pipeline.Page{page(`{"id":"a"}`)}}, Config{})
	res := get(t, srv.URL+"/get%4AsonStream"+someRange)
	body, _ := readAll(t, res)
	if res.StatusCode != http.StatusOK || body != `[{"id":"a"}]`+"\n" {
		t.Errorf("/get%%4AsonStream: %d %s, want /getJsonStream's 200 [{\"id\":\"a\"}]", res.StatusCode, body)
	}
	res = get(t, srv.URL+"/get%2FJsonStream"+someRange)
	body, _ = readAll(t, res)
	if e := errorOf(t, body); res.StatusCode != http.StatusNotFound || !strings.Contains(e.Message, "/get%2FJsonStream") {
		t.Errorf("/get%%2FJsonStream: %d %s, want 404 naming the path as sent", res.StatusCode, body)
	}
}
