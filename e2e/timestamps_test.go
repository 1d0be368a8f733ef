//go:build integration

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/store"
)

// timestampRow is one message whose event time the webserver must read, and the
// instant it must be stored, filed and found under, in UTC and with
// TIMESTAMP_DEFAULT_ZONE=America/New_York.
type timestampRow struct {
	name     string
	data     string
	utc, ny  string // the normalised instant, RFC 3339; "publish": the publish time
	original string // the producer's @timestamp, kept aside when rewritten
	fallback string // the reason the publish time was used
}

var timestampRows = []timestampRow{
	{name: "own-canonical", data: `{"@timestamp":"2023-03-10T10:00:01Z"}`, utc: "2023-03-10T10:00:01Z"},
	{name: "own-offset", data: `{"@timestamp":"2023-03-10T11:00:02+01:00"}`, utc: "2023-03-10T10:00:02Z", original: `"2023-03-10T11:00:02+01:00"`},
	{name: "own-zoneless", data: `{"@timestamp":"2023-03-14T22:00:03"}`, utc: "2023-03-14T22:00:03Z", ny: "2023-03-15T02:00:03Z", original: `"2023-03-14T22:00:03"`},
	{name: "own-epoch-seconds", data: `{"@timestamp":1678442404}`, utc: "2023-03-10T10:00:04Z", original: `1678442404`},
	{name: "own-epoch-millis", data: `{"@timestamp":1678442405123}`, utc: "2023-03-10T10:00:05.123Z", original: `1678442405123`},
	{name: "own-microseconds", data: `{"@timestamp":"2023-03-10T10:00:06.123456Z"}`, utc: "2023-03-10T10:00:06.123Z", original: `"2023-03-10T10:00:06.123456Z"`},
	{name: "own-null", data: `{"timestamp":"2023-03-10T10:00:07Z","@timestamp":null}`, utc: "2023-03-10T10:00:07Z", original: `null`},
	{name: "own-unreadable", data: `{"@timestamp":"yesterday","timestamp":1678442408}`, utc: "2023-03-10T10:00:08Z", original: `"yesterday"`},
	{name: "field-utc", data: `{"timestamp":"2023-03-10T10:00:09Z"}`, utc: "2023-03-10T10:00:09Z"},
	{name: "field-offset", data: `{"timestamp":"2023-03-10T05:00:10-05:00"}`, utc: "2023-03-10T10:00:10Z"},
	{name: "field-zoneless", data: `{"timestamp":"2023-03-14T22:00:11"}`, utc: "2023-03-14T22:00:11Z", ny: "2023-03-15T02:00:11Z"},
	{name: "field-epoch-seconds", data: `{"timestamp":1678442412}`, utc: "2023-03-10T10:00:12Z"},
	{name: "field-epoch-millis", data: `{"timestamp":1678442413500}`, utc: "2023-03-10T10:00:13.5Z"},
	{name: "field-date", data: `{"timestamp":"2023-03-11"}`, utc: "2023-03-11T00:00:00Z", ny: "2023-03-11T05:00:00Z"},
	{name: "own-unreadable-only", data: `{"@timestamp":"yesterday"}`, utc: "publish", original: `"yesterday"`, fallback: "not_a_date"},
	{name: "field-out-of-range", data: `{"timestamp":-1}`, utc: "publish", fallback: "out_of_range"},
	{name: "none", data: `{"label":"cat"}`, utc: "publish", fallback: "missing"},
}

// TestEveryTimestampIsStoredAsTheInstantThatChoseItsIndex: for every form a
// producer may send its event time in, the stored @timestamp is the normalised
// instant that chose the daily index, and the range queries of the API return
// the document for exactly the ranges that contain that instant.
func TestEveryTimestampIsStoredAsTheInstantThatChoseItsIndex(t *testing.T) {
	for _, zone := range []string{"", "America/New_York"} {
		t.Run("zone "+zone, func(t *testing.T) {
			h := newHarness(t)
			ws := h.startWebserver(map[string]string{"TIMESTAMP_DEFAULT_ZONE": zone})
			for i, row := range timestampRows {
				data := strings.Replace(row.data, "{", `{"row":"`+row.name+`",`, 1)
				if _, err := h.js.Publish(h.ctx, "annotations.cam-01", []byte(data), jetstream.WithMsgID(row.name)); err != nil {
					t.Fatal(err)
				}
				h.n = i + 1
			}
			h.waitIngested(time.Minute)
			refresh(t, h.esURL, h.prefix)
			stored := storedDocuments(t, h.esURL, h.prefix)

			stream, err := h.js.Stream(h.ctx, "ANNOTATIONS")
			if err != nil {
				t.Fatal(err)
			}
			st, err := store.New(store.Config{Addresses: []string{h.esURL}, IndexPrefix: h.prefix})
			if err != nil {
				t.Fatal(err)
			}
			for i, row := range timestampRows {
				want := row.utc
				if zone != "" && row.ny != "" {
					want = row.ny
				}
				var instant time.Time
				if want == "publish" {
					msg, err := stream.GetMsg(h.ctx, uint64(i+1))
					if err != nil {
						t.Fatal(err)
					}
					instant = msg.Time.UTC().Truncate(time.Millisecond)
				} else if instant, err = time.Parse(time.RFC3339Nano, want); err != nil {
					t.Fatal(err)
				}

				doc, ok := stored[row.name]
				if !ok {
					t.Errorf("%s: not stored", row.name)
					continue
				}
				if wantIndex := h.prefix + "-" + instant.Format("2006.01.02"); doc.Index != wantIndex {
					t.Errorf("%s: filed in %s, want %s", row.name, doc.Index, wantIndex)
				}
				if got, want := string(doc.Source["@timestamp"]), `"`+instant.Format(time.RFC3339Nano)+`"`; got != want {
					t.Errorf("%s: stored @timestamp %s, want %s", row.name, got, want)
				}
				if got := string(doc.Source["@timestamp_original"]); got != row.original {
					t.Errorf("%s: @timestamp_original %q, want %q", row.name, got, row.original)
				}
				// Every range holding the instant holds [instant, instant+1ms), and every
				// other one lies within [0000, instant) or [instant+1ms, 9999).
				for _, r := range []struct {
					from, to time.Time
					want     bool
				}{
					{instant, instant.Add(time.Millisecond), true},
					{time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), instant, false},
					{instant.Add(time.Millisecond), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), false},
				} {
					if got := exportHas(t, st, r.from, r.to, row.name); got != r.want {
						t.Errorf("%s: the range [%s, %s) returns it: %v, want %v", row.name,
							r.from.Format(time.RFC3339Nano), r.to.Format(time.RFC3339Nano), got, r.want)
					}
				}
			}

			// Unreadable timestamps are counted by reason, and logged once.
			metrics := get(t, ws.admin+"/metrics")
			body, _ := io.ReadAll(metrics.Body)
			metrics.Body.Close()
			for _, row := range timestampRows {
				if row.fallback == "" {
					continue
				}
				if series := `webserver_timestamp_fallbacks_total{reason="` + row.fallback + `"} 1`; !strings.Contains(string(body), series) {
					t.Errorf("metrics lack %s", series)
				}
			}
			if n := strings.Count(ws.proc.Output(), "stored under their publish time"); n != 1 {
				t.Errorf("messages stored under their publish time were logged %d times within a minute, want once", n)
			}
		})
	}
}

type storedDocument struct {
	Index  string
	Source map[string]json.RawMessage
}

// storedDocuments returns the documents of prefix by their "row" field.
func storedDocuments(t *testing.T, esURL, prefix string) map[string]storedDocument {
	t.Helper()
	res, err := http.Get(esURL + "/" + prefix + "-*/_search?size=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var parsed struct {
		Hits struct {
			Hits []struct {
				Index  string                     `json:"_index"`
				Source map[string]json.RawMessage `json:"_source"`
			} `json:"hits"`
		} `json:"hits"`
	}
	if err := json.NewDecoder(res.Body).Decode(&parsed); err != nil {
		t.Fatal(err)
	}
	out := map[string]storedDocument{}
	for _, h := range parsed.Hits.Hits {
		var row string
		json.Unmarshal(h.Source["row"], &row)
		out[row] = storedDocument{Index: h.Index, Source: h.Source}
	}
	return out
}

// exportHas reports whether the API's range query for [from, to) returns the
// document of row.
func exportHas(t *testing.T, st *store.Store, from, to time.Time, row string) bool {
	t.Helper()
	found := false
	err := st.Export(t.Context(), pipeline.Range{From: from, To: to, PageSize: 1000}, func(p pipeline.Page) error {
		for _, doc := range p.Docs {
			if strings.Contains(string(doc), `"row":"`+row+`"`) {
				found = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
