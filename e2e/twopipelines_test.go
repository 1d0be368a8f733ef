//go:build integration

package e2e

import (
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/audit"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// TestTwoPipelinesRunSideBySideOnOneNATSServer: a second deployment that names
// its own stream, subjects and consumer, and nothing of its dead letters, starts on
// a server the first one already uses, and each keeps its documents and its dead
// letters to itself. Its index prefix nests in the first's, as in docs/operating.md
// (annotations-lidar beside annotations): the indices of the second match
// <first>-* too, yet each pipeline's template, backend, audit and retention keep
// to its own.
func TestTwoPipelinesRunSideBySideOnOneNATSServer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	lidarPrefix := testenv.NestedIndexPrefix(t, h.esURL, h.prefix, "lidar")
	// An index of each past the first pipeline's retention; the second has none.
	old := time.Now().UTC().AddDate(0, 0, -40).Format("2006.01.02")
	for _, index := range []string{h.prefix + "-" + old, lidarPrefix + "-" + old} {
		testenv.ESJSON(t, http.MethodPut, h.esURL+"/"+index, nil, nil)
	}
	first := h.startWebserver(map[string]string{"ES_RETENTION": "30d"}) // ANNOTATIONS, annotations.>, ANNOTATIONS_DLQ, dlq.>
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
	pipelines := []struct {
		stream, durable, dlq, dlqSubject, prefix, which string
		env                                             map[string]string
	}{
		{"ANNOTATIONS", "webserver", "ANNOTATIONS_DLQ", "dlq.annotations.cam-01", h.prefix, "annotations", nil},
		{"LIDAR", "lidar-webserver", "LIDAR_DLQ", "lidar_dlq.lidar.unit-7", lidarPrefix, "lidar", lidar},
	}
	for _, p := range pipelines {
		waitSettled(t, h, p.stream, p.durable, 2)
		// By the index's full name: <prefix>-* of the first would count both.
		index := p.prefix + "-2023.03.09"
		testenv.Refresh(t, h.esURL, index)
		if whiches := storedWhiches(t, h.esURL, index); !slices.Equal(whiches, []string{p.which}) {
			t.Errorf("%s holds documents of %v; want its own one, of %s", index, whiches, p.which)
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
		// As docs/guarantees.md says: a dead-lettered original is settled, not deleted
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

	t.Run("each backend serves only its own pipeline's documents", func(t *testing.T) {
		for _, p := range pipelines {
			b := startBackendProcess(t, map[string]string{"ES_INDEX_PREFIX": p.prefix})
			testenv.WaitHTTP(t, "http://"+b.listen+"/healthz", 30*time.Second)
			var docs []struct {
				Which string `json:"which"`
			}
			res := get(t, "http://"+b.listen+"/getJsonStream?start_date=2023-03-09&end_date=2023-03-10")
			if err := json.NewDecoder(res.Body).Decode(&docs); err != nil {
				t.Fatal(err)
			}
			if len(docs) != 1 || docs[0].Which != p.which {
				t.Errorf("the backend of %s served %+v; want its own one document, of %s", p.prefix, docs, p.which)
			}
		}
	})

	t.Run("each audit counts only its own pipeline's documents", func(t *testing.T) {
		for _, p := range pipelines {
			r := auditReport(t, h, p.env)
			if r.Stream != p.stream || r.Messages != 2 || r.Indexed != 1 || r.DeadLettered != 1 || r.Missing != 0 ||
				len(r.IndexedTwice) != 0 || r.IndexedNotInStream != 0 {
				t.Errorf("audit of %s: %+v; want 2 messages of %s, 1 indexed, 1 dead-lettered, nothing else", p.prefix, r, p.stream)
			}
		}
	})

	t.Run("the first pipeline's retention leaves the second's old index alone", func(t *testing.T) {
		want := []string{h.prefix + "-2023.03.09", lidarPrefix + "-2023.03.09", lidarPrefix + "-" + old}
		slices.Sort(want)
		if got := waitIndices(t, h.esURL, h.prefix+"-*", want); !slices.Equal(got, want) {
			t.Errorf("indices = %v, want %v", got, want)
		}
		if n := waitDeletedCount(t, first.admin, 1); n != 1 {
			t.Errorf("webserver_indices_deleted_total = %v, want 1", n)
		}
	})
}

// storedWhiches lists the "which" field of every document in index, sorted.
func storedWhiches(t *testing.T, esURL, index string) []string {
	t.Helper()
	var found struct {
		Hits struct {
			Hits []struct {
				Source struct {
					Which string `json:"which"`
				} `json:"_source"`
			} `json:"hits"`
		} `json:"hits"`
	}
	testenv.ESJSON(t, http.MethodGet, esURL+"/"+index+"/_search?size=100", nil, &found)
	var out []string
	for _, h := range found.Hits.Hits {
		out = append(out, h.Source.Which)
	}
	slices.Sort(out)
	return out
}

// auditReport runs `webserver audit --json` for the pipeline env describes (nil:
// the harness's own) and returns its report.
func auditReport(t *testing.T, h *harness, env map[string]string) audit.Report {
	t.Helper()
	cmd := exec.CommandContext(h.ctx, binary(t, "webserver"), "audit", "--json")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"NATS_URL=" + h.nats.URL(), "ELASTICSEARCH_URL=" + h.esURL, "ES_INDEX_PREFIX=" + h.prefix}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.Output()
	var r audit.Report
	if jsonErr := json.Unmarshal(out, &r); jsonErr != nil {
		t.Fatalf("audit --json: %v, %v\n%s", err, jsonErr, out)
	}
	return r
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
