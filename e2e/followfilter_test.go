//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// follow=true with q: followers with different filters share each step's one
// search, and each must still get exactly what getJsonStream selects with its
// own q, through a webserver killed mid-stream.

// filteredFollower is one follower of the test, and what its q means in Go, so
// that getJsonStream's answer is checked against the frames too, not only the
// follower against getJsonStream.
type filteredFollower struct {
	name  string
	q     string
	sse   bool
	holds func(labelledFrame) bool
	got   *received
}

// surePerson is the nested condition of the test: one label both a person and
// sure, not a person and some other label sure.
const surePerson = `camera_id:(cam-01 or cam-03) and labels:{ label:person and confidence >= 0.7 }`

func holdsSurePerson(f labelledFrame) bool {
	return (f.Camera == "cam-01" || f.Camera == "cam-03") && slices.ContainsFunc(f.Labels, func(l sample.Label) bool {
		return l.Label == "person" && l.Confidence >= 0.7
	})
}

func TestFollowersWithDifferentFiltersEachGetWhatGetJsonStreamSelectsThroughAKill(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	wsEnv := map[string]string{"NATS_DUPLICATE_WINDOW": "1s"}
	ws1 := h.startWebserver(wsEnv)
	base := followBackend(t, h, map[string]string{"API_MAX_STREAMS_PER_CLIENT": "16"})
	pub := newLivePublisher(t, h.ctx, h.js)
	pub.gen = &sample.Generator{Cameras: 4}
	pub.latePct, pub.dupPct, pub.poisonPct = 10, 2, 1

	total := 20000
	if testing.Short() {
		total = 6000
	}
	from := time.Now().Add(-2 * time.Hour)
	pub.frames(total/10, 1000) // some history, and the fields mapped

	always := func(labelledFrame) bool { return true }
	followers := []*filteredFollower{
		{name: "without q, SSE", sse: true, holds: always},
		{name: "a sure person on camera 1 or 3, SSE", q: surePerson, sse: true, holds: holdsSurePerson},
		{name: "a sure person on camera 1 or 3, NDJSON", q: surePerson, holds: holdsSurePerson},
		{name: "a car away from gate-2, NDJSON", q: `labels:{ label:car } and not site:gate-2`, holds: func(f labelledFrame) bool {
			return f.Site != "gate-2" && slices.ContainsFunc(f.Labels, func(l sample.Label) bool { return l.Label == "car" })
		}},
		{name: "fast frames after the 50th, SSE", q: `frame > 50 and inference_ms < 20`, sse: true, holds: func(f labelledFrame) bool {
			return f.Frame > 50 && f.InferenceMS < 20
		}},
		{name: "a misspelt field, NDJSON", q: `camra_id:cam-01`, holds: func(labelledFrame) bool { return false }},
	}
	// cut is cut before the kill and resumes after it with its Last-Event-ID.
	cut := &filteredFollower{name: "a sure person, cut and resumed, SSE", q: surePerson, sse: true, holds: holdsSurePerson}
	query := func(q string) string {
		if q == "" {
			return rangeParams(from, nil)
		}
		return rangeParams(from, nil) + "&q=" + url.QueryEscape(q)
	}

	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	var wg sync.WaitGroup
	run := func(ctx context.Context, f *filteredFollower, after string) {
		wg.Go(func() {
			if _, err := follow(ctx, base, query(f.q), f.sse, after, f.got); err != nil && ctx.Err() == nil {
				f.got.mu.Lock()
				f.got.failure = err.Error()
				f.got.mu.Unlock()
			}
		})
	}
	for _, f := range append(followers, cut) {
		f.got = newReceived()
	}
	for _, f := range followers {
		run(ctx, f, "")
	}
	cutCtx, cutNow := context.WithCancel(ctx)
	var cutDone sync.WaitGroup
	cutDone.Go(func() {
		if _, err := follow(cutCtx, base, query(cut.q), true, "", cut.got); err != nil && cutCtx.Err() == nil {
			cut.got.failure = err.Error()
		}
	})
	waitFor(t, 30*time.Second, "followers turn live", func() bool {
		for _, f := range append(followers, cut) {
			if _, live, _, _ := f.got.snapshot(); !live {
				return false
			}
		}
		return true
	})

	published := make(chan struct{})
	go func() {
		defer close(published)
		pub.frames(total-total/10, 500)
	}()
	time.Sleep(10 * time.Second)
	cutNow()
	cutDone.Wait()
	cursor := cut.got.lastID
	before := len(cut.got.docs)
	ws1.proc.Kill()
	t.Logf("webserver killed at ack floor %d; the cut follower had %d documents", h.consumerInfo().AckFloor.Stream, before)
	h.startWebserver(wsEnv)

	// Its cursor covers its q: another q, or none, may not resume from it.
	for _, c := range []struct {
		name, q string
		sse     bool
		param   string
	}{
		{"another q, in Last-Event-ID", `camera_id:(cam-01 or cam-03)`, true, "Last-Event-ID"},
		{"no q, in after", "", false, "after"},
	} {
		status, err := follow(h.ctx, base, query(c.q), c.sse, cursor, newReceived())
		var body struct {
			Error struct{ Code, Param string }
		}
		if err != nil {
			_, raw, _ := strings.Cut(err.Error(), ": ")
			json.Unmarshal([]byte(raw), &body)
		}
		if status != http.StatusBadRequest || body.Error.Code != "invalid_cursor" || body.Error.Param != c.param {
			t.Errorf("a cursor of q %q resumed with %s: status %d, %+v (%v); want 400 invalid_cursor naming %s",
				cut.q, c.name, status, body.Error, err, c.param)
		}
	}
	run(ctx, cut, cursor)
	followers = append(followers, cut)

	<-published
	h.waitIngested(2 * time.Minute)
	to := time.Now().Add(time.Hour)
	all := stored(t, h, base, from, to)
	if len(all) != pub.good {
		t.Errorf("getJsonStream has %d documents, %d distinct good frames were published", len(all), pub.good)
	}
	frames := map[string]labelledFrame{}
	for id, doc := range all {
		var f labelledFrame
		if err := json.Unmarshal(doc, &f); err != nil {
			t.Fatalf("document %s: %v", id, err)
		}
		frames[id] = f
	}
	wants := map[string]map[string][]byte{}
	for _, f := range followers {
		if wants[f.q] != nil {
			continue
		}
		want := storedMatching(t, h, base, from, to, f.q)
		// getJsonStream itself selects what q says.
		selected := map[string][]byte{}
		for id, fr := range frames {
			if f.holds(fr) {
				selected[id] = all[id]
			}
		}
		if diff := sameDocuments(want, selected); diff != "" {
			t.Errorf("getJsonStream with q %q differs from the frames it should select: %s", f.q, diff)
		}
		if f.q != "" && f.q != `camra_id:cam-01` && (len(want) == 0 || len(want) == len(all)) {
			t.Errorf("q %q selects %d of %d documents: not a subset that tells anything", f.q, len(want), len(all))
		}
		wants[f.q] = want
	}
	flat := 0 // frames a person and sure, but not one label both
	for _, fr := range frames {
		person := slices.ContainsFunc(fr.Labels, func(l sample.Label) bool { return l.Label == "person" })
		sure := slices.ContainsFunc(fr.Labels, func(l sample.Label) bool { return l.Confidence >= 0.7 })
		if (fr.Camera == "cam-01" || fr.Camera == "cam-03") && person && sure && !holdsSurePerson(fr) {
			flat++
		}
	}
	if flat == 0 {
		t.Errorf("no frame tells the nested condition from a flat one: the test cannot see labels mapped as objects")
	}

	waitFor(t, 30*time.Second, "followers receive every document of their q", func() bool {
		for _, f := range followers {
			if n, _, _, failure := f.got.snapshot(); n < len(wants[f.q]) && failure == "" {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second) // two more steps: anything extra would show
	cancel()
	wg.Wait()

	for _, f := range followers {
		r := f.got
		if r.failure != "" {
			t.Errorf("%s: %s", f.name, r.failure)
		}
		if diff := sameDocuments(r.docs, wants[f.q]); diff != "" {
			t.Errorf("%s differs from getJsonStream with its q: %s", f.name, diff)
		}
		if len(r.repeats) > 0 {
			t.Errorf("%s got %d documents twice: %v", f.name, len(r.repeats), first(r.repeats))
		}
		t.Logf("%s: %d documents", f.name, len(r.docs))
	}
	if before == 0 || before >= len(cut.got.docs) {
		t.Errorf("the cut follower had %d documents before the kill and %d in the end: not cut in the middle", before, len(cut.got.docs))
	}
}

// A follow may begin before any document has the fields its q names: the
// mapping of the first frames must not leave it with fewer documents than
// getJsonStream selects afterwards.
func TestAFollowBegunBeforeItsFieldsAreMappedGetsWhatGetJsonStreamSelects(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.startWebserver(nil)
	base := followBackend(t, h, nil)
	from := time.Now().Add(-time.Minute)
	followers := []*filteredFollower{
		{name: "a keyword", q: `camera_id:cam-01`},
		{name: "a nested condition in braces", q: surePerson},
		{name: "a field of the nested labels, outside braces", q: `labels.label:person`},
		{name: "a number of the nested labels, outside braces", q: `labels.confidence >= 0.9`},
		{name: "the nested labels exist", q: `labels:*`},
	}
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, f := range followers {
		f.got = newReceived()
		wg.Go(func() {
			if _, err := follow(ctx, base, rangeParams(from, nil)+"&q="+url.QueryEscape(f.q), true, "", f.got); err != nil && ctx.Err() == nil {
				f.got.mu.Lock()
				f.got.failure = err.Error()
				f.got.mu.Unlock()
			}
		})
	}
	waitFor(t, 30*time.Second, "followers turn live", func() bool {
		for _, f := range followers {
			if _, live, _, _ := f.got.snapshot(); !live {
				return false
			}
		}
		return true
	})

	pub := newLivePublisher(t, h.ctx, h.js)
	pub.gen = &sample.Generator{Cameras: 4}
	pub.frames(2000, 1000)
	h.waitIngested(time.Minute)
	to := time.Now().Add(time.Minute)
	wants := map[string]map[string][]byte{}
	for _, f := range followers {
		wants[f.q] = storedMatching(t, h, base, from, to, f.q)
	}
	// Not waitFor: a follower short of documents is what this test is about,
	// and the difference says which.
	time.Sleep(5 * time.Second)
	cancel()
	wg.Wait()
	for _, f := range followers {
		if len(wants[f.q]) == 0 {
			t.Errorf("getJsonStream with q %q selects nothing", f.q)
		}
		if diff := sameDocuments(f.got.docs, wants[f.q]); diff != "" || f.got.failure != "" {
			t.Errorf("%s (q %q) differs from getJsonStream: %s (failure %q)", f.name, f.q, diff, f.got.failure)
		}
	}
}

// Indices of before labels were mapped as nested keep them as plain objects.
// A follow with conditions in braces must still get the documents of the
// indices created after it began (the next day's, or a late event's), which
// the template maps as nested, as getJsonStream does afterwards.
func TestAFollowGetsTheDocumentsOfIndicesCreatedAfterItBeganWhereOlderOnesHoldLabelsAsObjects(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	old := h.prefix + "-2023.03.09"
	testenv.ESJSON(t, http.MethodPut, h.esURL+"/"+old,
		[]byte(`{"settings":{"number_of_replicas":0},"mappings":{"properties":{"labels":{"type":"object"}}}}`), nil)
	testenv.ESJSON(t, http.MethodPost, h.esURL+"/"+old+"/_bulk?refresh=true",
		[]byte(`{"create":{"_id":"before-the-upgrade"}}`+"\n"+`{"@timestamp":"2023-03-09T19:40:00Z","labels":[{"label":"person","confidence":0.9}]}`+"\n"), nil)
	h.startWebserver(nil)
	base := followBackend(t, h, nil)
	pub := newLivePublisher(t, h.ctx, h.js)
	pub.gen = &sample.Generator{Cameras: 4}
	pub.frames(500, 1000) // today's index, where labels are nested
	h.waitIngested(time.Minute)

	from := time.Now().Add(-72 * time.Hour)
	q := `labels:{ label:person and confidence >= 0.7 }`
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	got := newReceived()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := follow(ctx, base, rangeParams(from, nil)+"&q="+url.QueryEscape(q), true, "", got); err != nil && ctx.Err() == nil {
			got.mu.Lock()
			got.failure = err.Error()
			got.mu.Unlock()
		}
	}()
	waitFor(t, 30*time.Second, "the follower turns live", func() bool { _, live, _, _ := got.snapshot(); return live })

	// Half of these are filed on the two days before, in indices created now.
	pub.latePct, pub.lateBy = 50, 48*time.Hour
	pub.frames(2000, 1000)
	h.waitIngested(time.Minute)
	to := time.Now().Add(time.Minute)
	want := storedMatching(t, h, base, from, to, q)
	// getJsonStream itself selects what q says, on both mappings.
	selected := map[string][]byte{}
	for id, doc := range stored(t, h, base, from, to) {
		var f labelledFrame
		json.Unmarshal(doc, &f)
		if slices.ContainsFunc(f.Labels, func(l sample.Label) bool { return l.Label == "person" && l.Confidence >= 0.7 }) {
			selected[id] = doc
		}
	}
	if diff := sameDocuments(want, selected); diff != "" {
		t.Errorf("getJsonStream with q %q differs from the frames it should select: %s", q, diff)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	earlier := 0
	for _, doc := range want {
		var f liveFrame
		json.Unmarshal(doc, &f)
		if !strings.HasPrefix(f.Timestamp, today) {
			earlier++
		}
	}
	if earlier == 0 {
		t.Fatalf("getJsonStream selects none of the frames filed in indices created during the follow (of %d)", len(want))
	}
	time.Sleep(5 * time.Second) // steps enough for all of them
	cancel()
	<-done
	if diff := sameDocuments(got.docs, want); diff != "" || got.failure != "" {
		t.Errorf("the follow differs from getJsonStream (%d documents from indices created during it): %s (failure %q)", earlier, diff, got.failure)
	}
}
