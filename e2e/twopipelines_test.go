//go:build integration

package e2e

import (
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// TestTwoPipelinesRunSideBySideOnOneNATSServer: a second deployment that names
// its own stream, subjects and consumer, and nothing of its dead letters, starts on
// a server the first one already uses, and each keeps its documents and its dead
// letters to itself.
func TestTwoPipelinesRunSideBySideOnOneNATSServer(t *testing.T) {
	h := newHarness(t)
	h.startWebserver(nil) // ANNOTATIONS, annotations.>, ANNOTATIONS_DLQ, dlq.>
	lidarPrefix := testenv.IndexPrefix(t, h.esURL)
	lidar := map[string]string{
		"NATS_STREAM": "LIDAR", "NATS_SUBJECTS": "lidar.>", "NATS_DURABLE": "lidar-webserver", "ES_INDEX_PREFIX": lidarPrefix,
	}

	// Given the first one's prefix, the second one's dead-letter subjects would
	// overlap the first's: it must say which variable to set.
	clashing := maps.Clone(lidar)
	clashing["NATS_DLQ_SUBJECT_PREFIX"] = "dlq"
	clash := h.startWebserverExpectingFailure(clashing)
	if !strings.Contains(clash, "NATS_DLQ_SUBJECT_PREFIX") {
		t.Errorf("a second pipeline with the same dead-letter prefix: the error does not name NATS_DLQ_SUBJECT_PREFIX:\n%s", clash)
	}

	h.startWebserver(lidar) // LIDAR_DLQ on lidar_dlq.>, from its stream's name

	for _, m := range []struct{ subject, data string }{
		{"annotations.cam-01", `{"timestamp":"2023-03-09T19:40:00Z","which":"annotations"}`},
		{"annotations.cam-01", `[1]`},
		{"lidar.unit-7", `{"timestamp":"2023-03-09T19:40:01Z","which":"lidar"}`},
		{"lidar.unit-7", `"not an object"`},
	} {
		if _, err := h.js.Publish(h.ctx, m.subject, []byte(m.data)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []struct{ stream, durable, dlq, dlqSubject, index, which string }{
		{"ANNOTATIONS", "webserver", "ANNOTATIONS_DLQ", "dlq.annotations.cam-01", h.prefix, "annotations"},
		{"LIDAR", "lidar-webserver", "LIDAR_DLQ", "lidar_dlq.lidar.unit-7", lidarPrefix, "lidar"},
	} {
		waitSettled(t, h, p.stream, p.durable, 2)
		refresh(t, h.esURL, p.index)
		docs := storedDocuments(t, h.esURL, p.index) // by "row", which these lack
		if n := countDocuments(t, h.esURL, p.index); n != 1 || string(docs[""].Source["which"]) != `"`+p.which+`"` {
			t.Errorf("%s indexed %d documents, %v; want its own one", p.stream, n, docs)
		}
		dlq, err := h.js.Stream(h.ctx, p.dlq)
		if err != nil {
			t.Fatalf("%s: %v", p.dlq, err)
		}
		info, err := dlq.Info(h.ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != 1 || info.State.Subjects[p.dlqSubject] != 1 {
			t.Errorf("%s holds %d dead letters on %v, want its own one on %s", p.dlq, info.State.Msgs, info.State.Subjects, p.dlqSubject)
		}
		// As the README says: a dead-lettered original is settled, not deleted
		// (the stream's retention is by limits).
		src, err := h.js.Stream(h.ctx, p.stream)
		if err != nil {
			t.Fatal(err)
		}
		srcInfo, err := src.Info(h.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if srcInfo.State.Msgs != 2 {
			t.Errorf("%s holds %d messages, want both, the dead-lettered one included", p.stream, srcInfo.State.Msgs)
		}
	}
}

// startWebserverExpectingFailure runs a webserver that must stop at start, and
// returns what it printed.
func (h *harness) startWebserverExpectingFailure(env map[string]string) string {
	h.t.Helper()
	base := map[string]string{"NATS_URL": h.nats.URL(), "ELASTICSEARCH_URL": h.esURL, "ADMIN_ADDR": testenv.FreeAddr(h.t)}
	maps.Copy(base, env)
	p := testenv.StartProcess(h.t, binary(h.t, "webserver"), base)
	select {
	case <-p.Exited():
	case <-time.After(30 * time.Second):
		h.t.Fatalf("the webserver still runs after 30s, want it to stop:\n%s", p.Output())
	}
	if p.ExitErr() == nil {
		h.t.Errorf("the webserver exited with status 0")
	}
	return p.Output()
}

// waitSettled waits until the durable consumer of stream has acked or
// terminated its first n messages.
func waitSettled(t *testing.T, h *harness, stream, durable string, n uint64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := h.js.Consumer(h.ctx, stream, durable)
		if err == nil {
			if info, err := c.Info(h.ctx); err == nil && info.AckFloor.Stream >= n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: fewer than %d messages settled after a minute", stream, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func countDocuments(t *testing.T, esURL, prefix string) int {
	t.Helper()
	res, err := http.Get(esURL + "/" + prefix + "-*/_count")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var c struct {
		Count int `json:"count"`
	}
	if err := json.NewDecoder(res.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c.Count
}
