//go:build integration

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"strconv"
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
	{name: "field-epoch-seconds-string", data: `{"timestamp":"1678442414"}`, utc: "2023-03-10T10:00:14Z"},
	{name: "field-epoch-millis-string", data: `{"timestamp":"1678442415123"}`, utc: "2023-03-10T10:00:15.123Z"},
	{name: "field-before-1970", data: `{"timestamp":"1969-07-20T20:17:40Z"}`, utc: "1969-07-20T20:17:40Z"},
	{name: "field-negative-epoch", data: `{"timestamp":-14182939}`, utc: "1969-07-20T20:17:41Z"},
	// An offset beyond RFC 3339's 23:59 is no date: the configured field is read.
	{name: "own-offset-24h", data: `{"@timestamp":"2023-03-10T10:00:16+24:00","timestamp":"2023-03-10T10:00:16Z"}`, utc: "2023-03-10T10:00:16Z", original: `"2023-03-10T10:00:16+24:00"`},
	{name: "own-unreadable-only", data: `{"@timestamp":"yesterday"}`, utc: "publish", original: `"yesterday"`, fallback: "not_a_date"},
	{name: "field-out-of-range", data: `{"timestamp":-62167219201}`, utc: "publish", fallback: "out_of_range"}, // the year -1
	{name: "none", data: `{"label":"cat"}`, utc: "publish", fallback: "missing"},
}

// TestEveryTimestampIsStoredAsTheInstantThatChoseItsIndex: for every form a
// producer may send its event time in, the stored @timestamp is the normalised
// instant that chose the daily index, and the range queries of the API return
// the document for exactly the ranges that contain that instant. (The rows are
// of 2023 and 1969, so the harness's webserver accepts any event time.)
func TestEveryTimestampIsStoredAsTheInstantThatChoseItsIndex(t *testing.T) {
	t.Parallel()
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
				checkFiled(t, h.prefix, row.name, doc, instant, row.original)
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

// checkFiled checks that the document of row is filed in the index of instant,
// with instant as its @timestamp and original as its @timestamp_original.
func checkFiled(t *testing.T, prefix, row string, doc storedDocument, instant time.Time, original string) {
	t.Helper()
	if wantIndex := prefix + "-" + instant.Format("2006.01.02"); doc.Index != wantIndex {
		t.Errorf("%s: filed in %s, want %s", row, doc.Index, wantIndex)
	}
	if got, want := string(doc.Source["@timestamp"]), `"`+instant.Format(time.RFC3339Nano)+`"`; got != want {
		t.Errorf("%s: stored @timestamp %s, want %s", row, got, want)
	}
	if got := string(doc.Source["@timestamp_original"]); got != original {
		t.Errorf("%s: @timestamp_original %q, want %q", row, got, original)
	}
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

const day = 24 * time.Hour

// The documented defaults of TIMESTAMP_MAX_PAST and TIMESTAMP_MAX_FUTURE, which
// the tests below leave as they are.
const defaultMaxPast, defaultMaxFuture = 30 * day, day

// defaultWindow sets the variables of the window empty, which is their default:
// the harness turns the window off for its scenarios of 2023.
var defaultWindow = map[string]string{"TIMESTAMP_MAX_PAST": "", "TIMESTAMP_MAX_FUTURE": ""}

// TestRandomTimestampsCreateNoMoreIndicesThanTheWindowHasDays: a producer whose
// timestamps are random years between 0001 and 9999, in every form a timestamp
// may take, writes to no more daily indices than the default window has days.
// Every message is stored: those outside the window under their publish time,
// counted as out_of_range fallbacks.
func TestRandomTimestampsCreateNoMoreIndicesThanTheWindowHasDays(t *testing.T) {
	t.Parallel()
	const messages = 10000
	// Publishing and ingesting take seconds; an instant this close to an edge of
	// the window could fall on either side of it, depending on its publish time.
	const slack = 5 * time.Minute
	h := newHarness(t)
	ws := h.startWebserver(defaultWindow)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	t0 := time.Now().UTC()
	first, last := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).Unix()
	outside := 0
	insideDays := map[string]bool{} // the days of the event times inside the window
	futures := make([]jetstream.PubAckFuture, 0, 1000)
	for i := range messages {
		var data string
		for {
			instant := time.Unix(first+rng.Int64N(last-first+1), rng.Int64N(1000)*1e6).UTC()
			if i%100 == 0 { // one in a hundred from a camera uploading last week's footage
				instant = t0.Add(-7*day + time.Duration(rng.Int64N(int64(6*day)))).Truncate(time.Millisecond)
			}
			var ok bool
			data, instant, ok = randomTimestamp(rng, i, instant)
			if !ok {
				continue
			}
			if instant.Before(t0.Add(-defaultMaxPast)) || instant.After(t0.Add(slack+defaultMaxFuture)) {
				outside++
			} else if !instant.Before(t0.Add(slack-defaultMaxPast)) && !instant.After(t0.Add(defaultMaxFuture)) {
				insideDays[instant.Format("2006.01.02")] = true
			} else {
				continue
			}
			break
		}
		fut, err := h.js.PublishAsync("annotations.cam-random", []byte(data))
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		if futures = append(futures, fut); len(futures) == cap(futures) {
			h.settle(futures, make([]string, len(futures)))
			futures = futures[:0]
		}
	}
	h.settle(futures, make([]string, len(futures)))
	h.waitIngested(2 * time.Minute)
	t1 := time.Now().UTC()
	if t1.Sub(t0) > slack {
		t.Fatalf("publishing and ingesting took %s, more than the %s the expectations allow for", t1.Sub(t0), slack)
	}
	refresh(t, h.esURL, h.prefix)

	if n := esCount(t, h.esURL, h.prefix, `{"match_all":{}}`); n != messages {
		t.Errorf("%d documents stored, want all %d messages", n, messages)
	}
	// The window holds 31 days: 32 daily indices at most, one more if the
	// publish times straddle midnight.
	allowed := map[string]bool{}
	for d := t0.Add(-defaultMaxPast).Truncate(day); !d.After(t1.Add(defaultMaxFuture)); d = d.Add(day) {
		allowed[d.Format("2006.01.02")] = true
	}
	if len(allowed) > 33 {
		t.Fatalf("the window spans %d days, want at most 33", len(allowed))
	}
	created := indices(t, h.esURL, h.prefix+"-*")
	if len(created) > len(allowed) {
		t.Errorf("%d indices created, want at most the %d days of the window: %v…", len(created), len(allowed), first5(created))
	}
	got := map[string]bool{}
	for _, index := range created {
		date := strings.TrimPrefix(index, h.prefix+"-")
		got[date] = true
		if !allowed[date] {
			t.Errorf("index %s lies outside the window", index)
		}
	}
	for date := range insideDays {
		if !got[date] {
			t.Errorf("no index for %s, the day of event times inside the window", date)
		}
	}
	t.Logf("%d messages, %d outside the window, %d indices: %v", messages, outside, len(created), created)

	body := metricsText(t, ws.admin)
	if series := fmt.Sprintf(`webserver_timestamp_fallbacks_total{reason="out_of_range"} %d`, outside); !strings.Contains(body, series+"\n") {
		t.Errorf("metrics lack %s:\n%s", series, fallbackLines(body))
	}
	for _, reason := range []string{"missing", "null", "not_a_date"} {
		if strings.Contains(body, `webserver_timestamp_fallbacks_total{reason="`+reason+`"}`) {
			t.Errorf("fallbacks counted as %s, want none:\n%s", reason, fallbackLines(body))
		}
	}
}

// randomTimestamp writes instant in the form i chooses, in the field a producer
// chooses, and returns the instant the webserver will read from it; ok is false
// for an instant the form cannot carry.
func randomTimestamp(rng *rand.Rand, i int, instant time.Time) (data string, read time.Time, ok bool) {
	field := "timestamp"
	if i%2 == 0 {
		field = "@timestamp"
	}
	var value string
	switch i % 6 {
	case 0: // RFC 3339 in UTC
		value = `"` + instant.Format(time.RFC3339Nano) + `"`
	case 1: // RFC 3339 with an offset of up to ±14h
		local := instant.In(time.FixedZone("", int(rng.Int64N(113)-56)*15*60))
		if local.Year() > 9999 || local.Year() < 0 {
			return "", instant, false
		}
		value = `"` + local.Format(time.RFC3339Nano) + `"`
	case 2: // epoch milliseconds
		value = strconv.FormatInt(instant.UnixMilli(), 10)
	case 3: // epoch milliseconds, as a string
		value = `"` + strconv.FormatInt(instant.UnixMilli(), 10) + `"`
	case 4: // epoch seconds
		instant = instant.Truncate(time.Second)
		value = strconv.FormatInt(instant.Unix(), 10)
	case 5: // epoch seconds, as a string
		instant = instant.Truncate(time.Second)
		value = `"` + strconv.FormatInt(instant.Unix(), 10) + `"`
	}
	// Epochs beyond the magnitudes of seconds (years after 5138) or milliseconds
	// read otherwise, but as far from now: outside the window either way.
	return `{"camera_id":"cam-random","` + field + `":` + value + `}`, instant, true
}

// TestEventTimesOutsideTheWindowAreStoredUnderThePublishTimeOrDeadLettered: with
// the default window, last week's footage keeps its own time, and a time outside
// the window is treated as any unreadable one: the message is stored under its
// publish time with what the producer sent kept as it was, or, when a timestamp
// is required, dead-lettered as timestamp_out_of_range.
func TestEventTimesOutsideTheWindowAreStoredUnderThePublishTimeOrDeadLettered(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC().Truncate(time.Millisecond)
	lastWeek, tooOld, tooNew := now.Add(-7*day), now.Add(-40*day), now.Add(2*day)
	rows := []struct {
		name, data string
		inside     bool
		original   string // the producer's @timestamp, kept aside
	}{
		{"last-week", `{"timestamp":"` + lastWeek.Format(time.RFC3339Nano) + `"}`, true, ""},
		{"own-40-days-old", `{"@timestamp":"` + tooOld.Format(time.RFC3339Nano) + `","label":"cat"}`, false, `"` + tooOld.Format(time.RFC3339Nano) + `"`},
		{"field-2-days-ahead", `{"timestamp":"` + tooNew.Format(time.RFC3339Nano) + `","label":"cat"}`, false, ""},
		{"field-1969", `{"timestamp":"1969-07-20T20:17:40Z"}`, false, ""},
		{"own-negative-epoch", `{"@timestamp":-14182940}`, false, `-14182940`},
		{"field-epoch-string-2100", `{"timestamp":"4102444800"}`, false, ""},
	}
	for _, required := range []bool{false, true} {
		t.Run(fmt.Sprintf("required %v", required), func(t *testing.T) {
			h := newHarness(t)
			env := maps.Clone(defaultWindow)
			env["TIMESTAMP_REQUIRED"] = strconv.FormatBool(required)
			ws := h.startWebserver(env)
			seqs := map[string]uint64{}
			for _, row := range rows {
				data := strings.Replace(row.data, "{", `{"row":"`+row.name+`",`, 1)
				ack, err := h.js.Publish(h.ctx, "annotations.cam-01", []byte(data), jetstream.WithMsgID(row.name))
				if err != nil {
					t.Fatal(err)
				}
				seqs[row.name] = ack.Sequence
			}
			h.waitIngested(time.Minute)
			refresh(t, h.esURL, h.prefix)
			stored := storedDocuments(t, h.esURL, h.prefix)
			stream, err := h.js.Stream(h.ctx, "ANNOTATIONS")
			if err != nil {
				t.Fatal(err)
			}

			wantDLQ := map[uint64]string{}
			for _, row := range rows {
				doc, ok := stored[row.name]
				if required && !row.inside {
					wantDLQ[seqs[row.name]] = "timestamp_out_of_range"
					if ok {
						t.Errorf("%s: stored in %s, want it dead-lettered", row.name, doc.Index)
					}
					continue
				}
				if !ok {
					t.Errorf("%s: not stored", row.name)
					continue
				}
				want := lastWeek
				if !row.inside {
					msg, err := stream.GetMsg(h.ctx, seqs[row.name])
					if err != nil {
						t.Fatal(err)
					}
					want = msg.Time.UTC().Truncate(time.Millisecond)
				}
				checkFiled(t, h.prefix, row.name, doc, want, row.original)
				// Every field the producer sent but @timestamp is stored as it was sent.
				var sent map[string]json.RawMessage
				if err := json.Unmarshal([]byte(row.data), &sent); err != nil {
					t.Fatal(err)
				}
				for k, v := range sent {
					if k != "@timestamp" && string(doc.Source[k]) != string(v) {
						t.Errorf("%s: field %s stored as %s, want it as sent, %s", row.name, k, doc.Source[k], v)
					}
				}
			}

			body := metricsText(t, ws.admin)
			if required {
				if got, _ := h.deadLetters(len(wantDLQ)); !maps.Equal(got, wantDLQ) {
					t.Errorf("dead letters (sequence → reason) = %v, want %v", got, wantDLQ)
				}
				if strings.Contains(body, "webserver_timestamp_fallbacks_total{") {
					t.Errorf("fallbacks counted, want none when a timestamp is required:\n%s", fallbackLines(body))
				}
				return
			}
			if series := fmt.Sprintf(`webserver_timestamp_fallbacks_total{reason="out_of_range"} %d`, len(rows)-1); !strings.Contains(body, series+"\n") {
				t.Errorf("metrics lack %s:\n%s", series, fallbackLines(body))
			}
		})
	}
}

// metricsText returns the webserver's /metrics page.
func metricsText(t *testing.T, admin string) string {
	t.Helper()
	res := get(t, admin+"/metrics")
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func fallbackLines(metrics string) string {
	var lines []string
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, "webserver_timestamp_fallbacks_total") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func first5(s []string) []string { return s[:min(len(s), 5)] }
