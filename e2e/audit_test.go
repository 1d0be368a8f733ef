//go:build integration

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/audit"
	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// The acceptance scenario, on one stream, in order: each step leaves every
// message accounted for again, but the last, which trims the stream.
func TestAuditProvesNothingIsLostAndReplayRepairsWhatWas(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A short duplicate window lets repeated Nats-Msg-Ids through to the
	// webserver, as repeats published after the window would in production.
	// A long ack wait: on a loaded machine (-race) a batch can wait for a free
	// bulk worker longer than the harness's 5s, unkept in progress, be redelivered
	// and at last dead-lettered as max_deliveries: real, and what the audit then
	// reports, but not this scenario's exact totals.
	ws := h.startWebserver(map[string]string{"NATS_DUPLICATE_WINDOW": "100ms", "AUDIT_INTERVAL": "3s", "NATS_ACK_WAIT": "2m"})
	w := publishAuditScenario(t, h)
	h.waitIngested(5 * time.Minute)
	testenv.Refresh(t, h.esURL, h.prefix+"-*")

	wantTotals := func(t *testing.T, r audit.Report) {
		t.Helper()
		if r.Messages != 50000 || r.Indexed != 48500 || r.DeadLettered != 500 || r.ProducerDuplicates != 1000 {
			letters, _ := h.deadLetters(int(r.DeadLettered))
			t.Errorf("totals: %d messages, %d indexed, %d dead-lettered (%s), %d producer duplicates; want 50000, 48500, 500, 1000",
				r.Messages, r.Indexed, r.DeadLettered, summarize(letters), r.ProducerDuplicates)
		}
	}

	t.Run("a clean ingestion audits clean with exact totals", func(t *testing.T) {
		r, code := h.audit(t)
		if code != 0 || !r.clean || r.Missing != 0 || len(r.IndexedTwice) != 0 || len(r.IndexedAndDeadLettered) != 0 {
			t.Errorf("exit %d, report %+v; want 0 and clean", code, r.Report)
		}
		wantTotals(t, r.Report)
	})

	t.Run("the webserver's periodic audit exports the same figures", func(t *testing.T) {
		var m map[string]float64
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			if m = scrape(t, ws.admin+"/metrics"); m["webserver_audit_messages"] == 50000 {
				break
			}
		}
		want := map[string]float64{"webserver_audit_messages": 50000, "webserver_audit_indexed": 48500, "webserver_audit_dead_lettered": 500,
			"webserver_audit_producer_duplicates": 1000, "webserver_audit_missing": 0, "webserver_audit_clean": 1}
		for name, v := range want {
			if m[name] != v {
				t.Errorf("%s = %v, want %v", name, m[name], v)
			}
		}
	})

	t.Run("documents deleted from Elasticsearch are reported exactly and repaired", func(t *testing.T) {
		// Of the documents whose id no later message repeated: a repeat of a
		// deleted document's id is missing too (see internal/audit's tests).
		rng := rand.New(rand.NewPCG(13, 137))
		deleted := map[uint64]bool{}
		for len(deleted) < 137 {
			seq := w.once[rng.IntN(len(w.once))]
			deleted[seq] = true
		}
		var ids []string
		for seq := range deleted {
			ids = append(ids, w.ids[seq])
		}
		deleteDocuments(t, h.esURL, h.prefix, ids)

		r, code := h.audit(t)
		var got []uint64
		for _, m := range r.MissingRanges {
			for s := m.From; s <= m.To; s++ {
				got = append(got, s)
			}
		}
		want := slices.Sorted(maps.Keys(deleted))
		if code != 1 || r.clean || !slices.Equal(got, want) {
			t.Fatalf("exit %d, missing %d %v; want exit 1 and exactly the 137 deleted %v", code, len(got), got, want)
		}

		out, code := h.tool(t, "audit", "--repair")
		if code != 0 || !strings.Contains(out, "137 indexed (were missing)") {
			t.Errorf("audit --repair: exit %d; want 0 and 137 indexed:\n%s", code, out)
		}
		testenv.Refresh(t, h.esURL, h.prefix+"-*")
		r, code = h.audit(t)
		if code != 0 || !r.clean {
			t.Errorf("audit after the repair: exit %d, report %+v; want clean", code, r.Report)
		}
		wantTotals(t, r.Report)
	})

	t.Run("replay restores exactly the documents of a deleted daily index, and again changes nothing", func(t *testing.T) {
		index := h.prefix + "-2023.03.09"
		before := testenv.DocumentIDs(t, h.esURL, index)
		if len(before) < 10000 {
			t.Fatalf("the first day holds only %d documents; the scenario is too small", len(before))
		}
		deleteIndex(t, h.esURL, index)

		out, code := h.tool(t, "replay", "--since", "1h")
		first := replayCounts(t, out)
		if code != 0 || first["indexed"] != len(before) || first["dead-lettered"] != 0 || first["already dead-lettered"] != 500 {
			t.Errorf("replay: exit %d, %v; want %d indexed, 500 already dead-lettered:\n%s", code, first, len(before), out)
		}
		after := testenv.DocumentIDs(t, h.esURL, index)
		if !maps.Equal(before, after) {
			t.Errorf("the index holds %d documents after the replay, want the %d it held", len(after), len(before))
		}

		out, code = h.tool(t, "replay", "--since", "1h")
		second := replayCounts(t, out)
		if code != 0 || second["indexed"] != 0 || second["dead-lettered"] != 0 || second["duplicates"] != 49500 {
			t.Errorf("second replay: exit %d, %v; want only duplicates (49500) and nothing indexed:\n%s", code, second, out)
		}
		testenv.Refresh(t, h.esURL, h.prefix+"-*")
		if r, code := h.audit(t); code != 0 || !r.clean {
			t.Errorf("audit after the replays: exit %d, report %+v", code, r.Report)
		}
	})

	t.Run("a window partly beyond a trimmed stream is not called clean", func(t *testing.T) {
		stream, err := h.js.Stream(h.ctx, "ANNOTATIONS")
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Purge(h.ctx, jetstream.WithPurgeSequence(10001)); err != nil {
			t.Fatal(err)
		}
		r, code := h.audit(t)
		if code != 1 || r.clean || r.BeyondStream == nil || *r.BeyondStream != (audit.Range{From: 1, To: 10000}) || r.FirstHeld != 10001 {
			t.Errorf("exit %d, clean %v, beyond %v, first held %d; want 1, not clean, 1-10000 beyond, 10001", code, r.clean, r.BeyondStream, r.FirstHeld)
		}
		if r.Messages != 40000 || r.Missing != 0 {
			t.Errorf("the part held: %d messages, %d missing; want 40000 and 0", r.Messages, r.Missing)
		}
		out, _ := h.tool(t, "audit")
		if !strings.Contains(out, "sequences 1-10000 are beyond the stream, which now begins at sequence 10001") || !strings.Contains(out, "NOT CLEAN") {
			t.Errorf("the text report does not say the window is partly beyond the stream:\n%s", out)
		}
		out, code = h.tool(t, "replay", "--from-seq", "9001", "--to-seq", "11000")
		if c := replayCounts(t, out); code != 1 || c["messages"] != 1000 || c["indexed"] != 0 ||
			!strings.Contains(out, "beyond the stream, which now begins at sequence 10001") {
			t.Errorf("replay of 9001-11000: exit %d, %v; want exit 1, the 1000 messages held replayed as duplicates, and the trim named:\n%s", code, c, out)
		}
	})
}

// auditWorld is what publishAuditScenario published: the document id of each
// sequence, and the sequences of good messages whose id no later message repeated.
type auditWorld struct {
	ids  map[uint64]string
	once []uint64
}

// publishAuditScenario publishes 50,000 messages in 50 rounds: 1% poison (invalid
// JSON), and 2% repeats of the Nats-Msg-Id and payload of a good message of the
// round before, published after the stream's 100ms duplicate window so that they
// reach the webserver. The frames span 2023-03-09 12:00 to 2023-03-10 22:40 UTC.
func publishAuditScenario(t *testing.T, h *harness) auditWorld {
	t.Helper()
	gen := sample.Generator{Start: time.Date(2023, 3, 9, 12, 0, 0, 0, time.UTC), Interval: 10 * time.Second, Cameras: 4}
	w := auditWorld{ids: map[uint64]string{}}
	repeated := map[string]bool{}
	type pub struct {
		id   string
		data []byte
		good bool
	}
	var previous []pub
	for round := range 51 {
		var batch []pub
		for i, p := range previous {
			if p.good && i%49 == 0 && len(batch) < 20 {
				batch = append(batch, pub{id: p.id, data: p.data})
				repeated[p.id] = true
			}
		}
		var originals []pub
		if round < 50 {
			for i := range 980 {
				if i%98 == 97 {
					originals = append(originals, pub{id: fmt.Sprintf("poison-%d-%d", round, i), data: []byte(`{"camera_id":"cam-01","frame":`)})
					continue
				}
				f := gen.Next()
				data, _ := json.Marshal(f)
				originals = append(originals, pub{id: f.MsgID(), data: data, good: true})
			}
		}
		batch = append(batch, originals...)
		futures := make([]jetstream.PubAckFuture, len(batch))
		for i, p := range batch {
			fut, err := h.js.PublishAsync("annotations.cam-01", p.data, jetstream.WithMsgID(p.id))
			if err != nil {
				t.Fatal(err)
			}
			futures[i] = fut
		}
		for i, fut := range futures {
			select {
			case ack := <-fut.Ok():
				if ack.Duplicate {
					t.Fatalf("the stream dropped %s as a duplicate: the duplicate window did not pass", batch[i].id)
				}
				w.ids[ack.Sequence] = batch[i].id
			case err := <-fut.Err():
				t.Fatal(err)
			case <-h.ctx.Done():
				t.Fatal("publish acks did not arrive")
			}
		}
		previous = originals
		// Past the duplicate window: the server forgets ids when a timer of the
		// window fires, so up to about twice the window after they were stored.
		time.Sleep(300 * time.Millisecond)
	}
	if len(w.ids) != 50000 {
		t.Fatalf("published %d messages, want 50000", len(w.ids))
	}
	for seq, id := range w.ids {
		if !strings.HasPrefix(id, "poison-") && !repeated[id] {
			w.once = append(w.once, seq)
		}
	}
	slices.Sort(w.once)
	return w
}

// auditResult is the JSON report of `webserver audit --json`.
type auditResult struct {
	audit.Report
	clean bool
}

// audit runs `webserver audit --json` and returns its report and exit status.
func (h *harness) audit(t *testing.T) (auditResult, int) {
	t.Helper()
	start := time.Now()
	out, code := h.run(t, "audit", "--json")
	var r struct {
		Clean bool `json:"clean"`
		audit.Report
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("audit --json (exit %d): %v\n%s", code, err, out)
	}
	t.Logf("audit: exit %d after %s and %d requests", code, time.Since(start).Round(time.Millisecond), r.Requests)
	return auditResult{Report: r.Report, clean: r.Clean}, code
}

var replayLine = regexp.MustCompile(`replayed (\d+) messages of stream \S+: (\d+) indexed \(were missing\), (\d+) duplicates \(already indexed\), (\d+) dead-lettered, (\d+) already dead-lettered, (\d+) unsettled`)

// replayCounts reads the summary line of `webserver replay`.
func replayCounts(t *testing.T, out string) map[string]int {
	t.Helper()
	m := replayLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary line in the replay's output:\n%s", out)
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	return map[string]int{"messages": n(1), "indexed": n(2), "duplicates": n(3), "dead-lettered": n(4), "already dead-lettered": n(5), "unsettled": n(6)}
}

// deleteDocuments deletes the documents with ids from whichever index holds them.
func deleteDocuments(t *testing.T, esURL, prefix string, ids []string) {
	t.Helper()
	q, _ := json.Marshal(map[string]any{"size": len(ids), "_source": false, "query": map[string]any{"ids": map[string]any{"values": ids}}})
	var found struct {
		Hits struct {
			Hits []struct {
				Index string `json:"_index"`
				ID    string `json:"_id"`
			} `json:"hits"`
		} `json:"hits"`
	}
	testenv.ESJSON(t, http.MethodPost, esURL+"/"+prefix+"-*/_search", q, &found)
	if len(found.Hits.Hits) != len(ids) {
		t.Fatalf("found %d of the %d documents to delete", len(found.Hits.Hits), len(ids))
	}
	var bulk bytes.Buffer
	for _, h := range found.Hits.Hits {
		fmt.Fprintf(&bulk, `{"delete":{"_index":%q,"_id":%q}}`+"\n", h.Index, h.ID)
	}
	testenv.ESJSON(t, http.MethodPost, esURL+"/_bulk?refresh=true", bulk.Bytes(), nil)
}

func deleteIndex(t *testing.T, esURL, index string) {
	t.Helper()
	testenv.ESJSON(t, http.MethodDelete, esURL+"/"+index, nil, nil)
}

// TestAuditReportsAWholeDeletedDailyIndexAndItsRepairSaysClean: the loss the
// docs/audit.md's "Replay and repair" names first, as an operator meets it. More than
// 5,000 missing sequences are looked up at once (one search for more hits than
// index.max_result_window once made the audit fail), and one of them repeats
// another's id, so the repair finds it indexed already, as the plain audit after
// it counts a producer duplicate: the repair's verdict must say clean as well.
func TestAuditReportsAWholeDeletedDailyIndexAndItsRepairSaysClean(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A short duplicate window lets the repeated id through to the webserver.
	h.startWebserver(map[string]string{"NATS_DUPLICATE_WINDOW": "100ms"})
	gen := sample.Generator{Start: time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC), Interval: time.Second, Cameras: 4}
	const n = 6000
	var first []byte
	futures := make([]jetstream.PubAckFuture, 0, n+1)
	for i := range n {
		f := gen.Next()
		data, _ := json.Marshal(f)
		if i == 0 {
			first = data
		}
		fut, err := h.js.PublishAsync(f.Subject("annotations"), data, jetstream.WithMsgID(f.MsgID()))
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, fut)
	}
	for _, fut := range futures {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			t.Fatal(err)
		case <-h.ctx.Done():
			t.Fatal("publish acks did not arrive")
		}
	}
	// Ten frames of the next day: its index stays. (With no index left, the
	// searches would have no shard to refuse them.)
	nextDay := sample.Generator{Start: time.Date(2023, 3, 10, 0, 0, 0, 0, time.UTC), Interval: time.Second, Cameras: 1}
	for range 10 {
		f := nextDay.Next()
		data, _ := json.Marshal(f)
		if _, err := h.js.Publish(h.ctx, "annotations.next-day", data); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // past the duplicate window
	var firstFrame sample.Frame
	if err := json.Unmarshal(first, &firstFrame); err != nil {
		t.Fatal(err)
	}
	if ack, err := h.js.Publish(h.ctx, firstFrame.Subject("annotations"), first, jetstream.WithMsgID(firstFrame.MsgID())); err != nil || ack.Duplicate || ack.Sequence != n+11 {
		t.Fatalf("republish the first frame: %+v, %v; want sequence %d, not a duplicate", ack, err, n+11)
	}
	h.waitIngested(3 * time.Minute)
	deleteIndex(t, h.esURL, h.prefix+"-2023.03.09")

	r, code := h.audit(t)
	if want := []audit.Range{{From: 1, To: n}, {From: n + 11, To: n + 11}}; code != 1 || r.clean || r.Missing != n+1 || !slices.Equal(r.MissingRanges, want) {
		t.Fatalf("audit after the index was deleted: exit %d, %d missing in %v; want exit 1 and %v missing", code, r.Missing, r.MissingRanges, want)
	}

	out, code := h.tool(t, "audit", "--repair")
	if c := replayCounts(t, out); code != 0 || c["indexed"] != n || c["duplicates"] != 1 || strings.Contains(out, "not clean after the repair") {
		t.Errorf("audit --repair: exit %d, %v; want exit 0, %d indexed and the repeated id a duplicate:\n%s", code, c, n, out)
	}
	testenv.Refresh(t, h.esURL, h.prefix+"-*")
	r, code = h.audit(t)
	if code != 0 || !r.clean || r.Indexed != n+10 || r.ProducerDuplicates != 1 {
		t.Errorf("audit after the repair: exit %d, %d indexed, %d producer duplicates, report %+v; want clean, %d and 1", code, r.Indexed, r.ProducerDuplicates, r.Report, n+10)
	}
}
