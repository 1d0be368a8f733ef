//go:build integration

package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/essecurity"
	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// securedHarness is a harness whose binaries talk to the node with
// Elasticsearch's own security, each as a user of deploy/elasticsearch-security.json;
// the harness's own checks go through the node's admin door.
func securedHarness(t *testing.T) (*harness, func(user string) map[string]string) {
	t.Helper()
	h := newHarness(t)
	secured := testenv.SecuredElasticsearch(t)
	h.esURL = secured.AdminURL
	h.prefix = testenv.IndexPrefix(t, secured.AdminURL)
	file, err := essecurity.Load("../deploy/elasticsearch-security.json", h.prefix)
	if err != nil {
		t.Fatal(err)
	}
	accounts := secured.Apply(t, file)
	as := func(user string) map[string]string {
		return testenv.WithEnv(accounts.Env(user), map[string]string{"ELASTICSEARCH_URL": secured.URL, "ELASTICSEARCH_CA_CERT": secured.CACertFile})
	}
	return h, as
}

// The roles operators deploy are the ones proven here: each binary runs its whole
// job against Elasticsearch's own security with nothing but the role the file
// gives it. (internal/store's privileges test proves the other half: each
// privilege of a role is needed, and a step outside the job is refused.)
func TestEachBinaryDoesItsWholeJobWithOnlyItsRoleOnASecuredCluster(t *testing.T) {
	t.Parallel()
	h, as := securedHarness(t)
	// An index past retention, and frames of March 2023 that are not: the
	// retention in days reaches back to just before them.
	aged := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	testenv.IndexDocuments(t, h.esURL, h.prefix, 1, func(int) pipeline.Item {
		return pipeline.Item{ID: "aged", Timestamp: aged, Body: testenv.DocumentBody("aged", aged, "cam-01")}
	})
	retention := int(time.Since(time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)).Hours() / 24)

	// The webserver: template, ingestion, dead letters, retention and the periodic audit.
	ws := h.startWebserver(testenv.WithEnv(as("webserver"), map[string]string{
		"ES_RETENTION": fmt.Sprintf("%dd", retention), "AUDIT_INTERVAL": "1s", "AUDIT_WINDOW": "1h",
	}))
	h.publish(2000)
	if _, err := h.js.Publish(h.ctx, "annotations.cam-01", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	// A frame whose camera_id is an object: Elasticsearch refuses it, and the
	// webserver sends it again with that member set aside, with the same role.
	var odd map[string]any
	data, _ := json.Marshal(h.gen.Next())
	json.Unmarshal(data, &odd)
	odd["camera_id"] = map[string]any{"x": 1}
	data, _ = json.Marshal(odd)
	ack, err := h.js.Publish(h.ctx, "annotations.cam-01", data)
	if err != nil {
		t.Fatal(err)
	}
	h.want[fmt.Sprintf("ANNOTATIONS-%d", ack.Sequence)] = true
	h.waitIngested(2 * time.Minute)
	assertStoredExactly(t, h)
	if reasons, _ := h.deadLetters(1); len(reasons) != 1 {
		t.Errorf("dead letters: %v, want the message that is not JSON", reasons)
	}
	if n := scrape(t, ws.admin+"/metrics")["webserver_documents_set_aside_total"]; n != 1 {
		t.Errorf("webserver_documents_set_aside_total = %v, want 1", n)
	}
	if got := indices(t, h.esURL, h.prefix+"-2020.*"); len(got) != 0 {
		t.Errorf("retention left %v", got)
	}
	waitFor(t, time.Minute, "a clean periodic audit", func() bool {
		m := scrape(t, ws.admin+"/metrics")
		return m["webserver_audit_clean"] == 1 && m["webserver_audit_last_run_timestamp_seconds"] > 0
	})
	// Elasticsearch's refusals for lack of privileges are security_exceptions
	// saying the action "is unauthorized".
	if out := ws.proc.Output(); strings.Contains(out, "security_exception") || strings.Contains(out, "is unauthorized") {
		t.Errorf("the webserver met a refusal:\n%s", out)
	}

	// The backend: export, counts, and a follow of frames published while it
	// runs, which it refreshes the indices to see.
	base := followBackend(t, h, as("backend"))
	refresh(t, h.esURL, h.prefix)
	var exported []json.RawMessage
	span := "start_date=2023-03-09T00:00:00Z&end_date=2023-03-10T00:00:00Z"
	res := get(t, base+"/getJsonStream?"+span)
	if err := json.NewDecoder(res.Body).Decode(&exported); err != nil || len(exported) != len(h.want) {
		t.Errorf("getJsonStream: %s, %d documents (%v); want %d", res.Status, len(exported), err, len(h.want))
	}
	res.Body.Close()
	var counts struct {
		Total int `json:"total"`
	}
	res = get(t, base+"/getCounts?"+span)
	if err := json.NewDecoder(res.Body).Decode(&counts); err != nil || counts.Total != len(h.want) {
		t.Errorf("getCounts: %s, total %d (%v); want %d", res.Status, counts.Total, err, len(h.want))
	}
	res.Body.Close()
	liveFrom, end := time.Now().Add(-time.Minute), time.Now().Add(4*time.Second)
	r := newReceived()
	followed := make(chan error, 1)
	go func() {
		_, err := follow(h.ctx, base, rangeParams(liveFrom, &end), true, "", r)
		followed <- err
	}()
	newLivePublisher(t, h.ctx, h.js).frames(300, 200)
	if err := <-followed; err != nil || r.failure != "" {
		t.Fatalf("follow: %v %s", err, r.failure)
	}
	h.waitIngested(time.Minute)
	live := stored(t, h, base, liveFrom, end)
	if diff := sameDocuments(r.docs, live); diff != "" || len(live) != 300 {
		t.Errorf("the follow differs from getJsonStream's %d documents (want 300): %s", len(live), diff)
	}

	// An operator: audit, repair and replay.
	h.toolEnv = as("operator")
	if out, code := h.tool(t, "audit"); code != 0 {
		t.Errorf("audit as the operator: exit %d\n%s", code, out)
	}
	victim := h.deleteOneDocument()
	if out, code := h.tool(t, "audit", "--repair"); code != 0 {
		t.Errorf("audit --repair as the operator: exit %d\n%s", code, out)
	}
	if got := testenv.DocumentIDs(t, h.esURL, h.prefix+"-*"); got[victim] != 1 {
		t.Errorf("after the repair, %s is stored %d times, want once", victim, got[victim])
	}
	if out, code := h.tool(t, "replay", "--from-seq", "1"); code != 0 {
		t.Errorf("replay as the operator: exit %d\n%s", code, out)
	}
	assertStoredExactly(t, h)

	// A tool run with a role short of its job stops at once, naming what to add.
	h.toolEnv = as("backend")
	out, code := h.tool(t, "audit", "--repair")
	if want := "the cluster privilege manage_index_templates (installing the index template)"; code == 0 || !strings.Contains(out, want) ||
		!strings.Contains(out, "give it the role annotations_operator of deploy/elasticsearch-security.json") {
		t.Errorf("audit --repair with the backend's role: exit %d, want a refusal naming %q and the operator's role:\n%s", code, want, out)
	}
}

// deleteOneDocument deletes one wanted document behind the webserver's back, as
// elastic, and returns its id. (The local node has no _delete_by_query: that is
// in the reindex module, which is not on Maven Central.)
func (h *harness) deleteOneDocument() string {
	h.t.Helper()
	var found struct {
		Hits struct {
			Hits []struct {
				Index string `json:"_index"`
				ID    string `json:"_id"`
			} `json:"hits"`
		} `json:"hits"`
	}
	testenv.ESJSON(h.t, http.MethodPost, h.esURL+"/"+h.prefix+"-2023.*/_search", map[string]any{"size": 1, "_source": false}, &found)
	if len(found.Hits.Hits) == 0 {
		h.t.Fatal("no document to delete")
	}
	hit := found.Hits.Hits[0]
	testenv.ESJSON(h.t, http.MethodDelete, h.esURL+"/"+hit.Index+"/_doc/"+hit.ID+"?refresh=true", nil, nil)
	return hit.ID
}

// assertStoredExactly checks the indices hold each id h wants exactly once and
// nothing else, the aged document retention deletes aside.
func assertStoredExactly(t *testing.T, h *harness) {
	t.Helper()
	want := map[string]int{}
	for id := range h.want {
		want[id] = 1
	}
	if got := testenv.DocumentIDs(t, h.esURL, h.prefix+"-2023.*"); !maps.Equal(got, want) {
		t.Errorf("stored documents differ from the published frames: %s", idDiff(got, want))
	}
}
