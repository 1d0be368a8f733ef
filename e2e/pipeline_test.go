//go:build integration

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/testenv"
)

func TestPipelineReturnsExactlyTheDocumentsOfTheRequestedRange(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)

	adminAddr := testenv.FreeAddr(t)
	testenv.StartProcess(t, binary(t, "webserver"), map[string]string{
		"NATS_URL":          ns.URL(),
		"ELASTICSEARCH_URL": esURL,
		"ES_INDEX_PREFIX":   prefix,
		"ADMIN_ADDR":        adminAddr,
		"BULK_MAX_WAIT":     "100ms",
		// The messages are of March 2023, older than the default window.
		"TIMESTAMP_MAX_PAST": "off",
	})
	testenv.WaitHTTP(t, "http://"+adminAddr+"/readyz", 30*time.Second)

	// The range is [19:40:00, 19:45:00) UTC. Timestamps come in the forms producers use.
	published := []struct {
		msg     message
		msgID   string
		inRange bool
	}{
		{message{ID: "before", Timestamp: "2023-03-09T19:39:59.999Z"}, "m-before", false},
		{message{ID: "at-start", Timestamp: "2023-03-09T19:40:00"}, "m-at-start", true},
		{message{ID: "offset", Timestamp: "2023-03-09T20:41:00+01:00"}, "", true},
		{message{ID: "epoch-ms", Timestamp: 1678390920000}, "m-epoch-ms", true}, // 19:42:00Z
		{message{ID: "epoch-s", Timestamp: 1678390980}, "", true},               // 19:43:00Z
		{message{ID: "fraction", Timestamp: "2023-03-09T19:44:59.999999Z"}, "m-fraction", true},
		{message{ID: "at-end", Timestamp: "2023-03-09T19:45:00Z"}, "m-at-end", false},
		{message{ID: "next-day", Timestamp: "2023-03-10T19:41:00Z"}, "m-next-day", false},
	}

	js := testenv.JetStream(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, p := range published {
		data, _ := json.Marshal(p.msg)
		var opts []jetstream.PublishOpt
		if p.msgID != "" {
			opts = append(opts, jetstream.WithMsgID(p.msgID))
		}
		if _, err := js.Publish(ctx, "annotations.cam-1", data, opts...); err != nil {
			t.Fatalf("publish %s: %v", p.msg.ID, err)
		}
	}
	waitAllAcked(t, ctx, js, "ANNOTATIONS", "webserver", uint64(len(published)))
	refresh(t, esURL, prefix)

	var want []string
	for _, p := range published {
		if p.inRange {
			want = append(want, p.msg.ID)
		}
	}

	listen := testenv.FreeAddr(t)
	testenv.StartProcess(t, binary(t, "backend"), map[string]string{
		"ELASTICSEARCH_URL": esURL,
		"ES_INDEX_PREFIX":   prefix,
		"LISTEN_ADDR":       listen,
	})
	testenv.WaitHTTP(t, "http://"+listen+"/healthz", 30*time.Second)
	query := "?start_date=2023-03-09T19:40:00&end_date=2023-03-09T19:45:00"

	t.Run("getJsonStream returns a JSON array, oldest first", func(t *testing.T) {
		res := get(t, "http://"+listen+"/getJsonStream"+query)
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q, want application/json", ct)
		}
		var docs []map[string]any
		if err := json.NewDecoder(res.Body).Decode(&docs); err != nil {
			t.Fatalf("decode body: %v", err)
		}
		assertIDs(t, docs, want)
		for _, d := range docs {
			nats, _ := d["@nats"].(map[string]any)
			if nats["subject"] != "annotations.cam-1" || nats["stream"] != "ANNOTATIONS" {
				t.Errorf("document %v lacks its NATS origin: %v", d["id"], d["@nats"])
			}
		}
		if got := docs[0]["@timestamp"]; got != "2023-03-09T19:40:00Z" {
			t.Errorf("@timestamp of the zone-less message = %v, want 2023-03-09T19:40:00Z", got)
		}
	})

	t.Run("getStream returns the same documents as NDJSON", func(t *testing.T) {
		res := get(t, "http://"+listen+"/getStream"+query)
		if ct := res.Header.Get("Content-Type"); ct != "application/x-ndjson" {
			t.Errorf("Content-Type = %q, want application/x-ndjson", ct)
		}
		var docs []map[string]any
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			var d map[string]any
			if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			docs = append(docs, d)
		}
		assertIDs(t, docs, want)
	})

	t.Run("a bad date is a 400 that names the parameter", func(t *testing.T) {
		res, err := http.Get("http://" + listen + "/getJsonStream?start_date=yesterday&end_date=2023-03-09T19:45:00")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body struct {
			Error struct{ Code, Param string }
		}
		json.NewDecoder(res.Body).Decode(&body)
		if res.StatusCode != http.StatusBadRequest || body.Error.Param != "start_date" || body.Error.Code != "invalid_parameter" {
			t.Errorf("got %d %+v, want 400 invalid_parameter for start_date", res.StatusCode, body.Error)
		}
	})
}

func assertIDs(t *testing.T, docs []map[string]any, want []string) {
	t.Helper()
	var got []string
	for _, d := range docs {
		id, _ := d["id"].(string)
		got = append(got, id)
	}
	if !slices.Equal(got, want) {
		t.Errorf("documents = %v, want %v", got, want)
	}
}
