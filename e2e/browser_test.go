//go:build integration

package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// The page at / in a real browser, against the real binaries: what a person sees
// of a range (counted, never downloaded), of a narrower one, of a filter, and of
// the frames that arrive while they follow it. The backend serves HTTPS and wants
// an API key, as in production.
func TestBrowserShowsARangeNarrowsItAndFollowsNewFrames(t *testing.T) {
	t.Parallel()
	chromiumBin := chromiumPath(t)

	ns := startNATS(t)
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	admin := testenv.FreeAddr(t)
	testenv.StartProcess(t, binary(t, "webserver"), map[string]string{
		"NATS_URL": ns.URL(), "ELASTICSEARCH_URL": esURL, "ES_INDEX_PREFIX": prefix,
		"ADMIN_ADDR": admin, "BULK_MAX_WAIT": "100ms",
	})
	testenv.WaitHTTP(t, "http://"+admin+"/readyz", 30*time.Second)

	// A copy of the page's files on another origin, as a frontend developer would
	// serve them, which the backend's CORS_ALLOWED_ORIGINS admits.
	elsewhere := httptest.NewServer(http.FileServerFS(os.DirFS("../internal/api/web")))
	t.Cleanup(elsewhere.Close)
	const key = "browser-test-key-0123456789"
	ca := testenv.NewCA(t, "browser test")
	cert := ca.Issue("backend", "127.0.0.1")
	certFile, keyFile := ca.WriteKeyPair(cert)
	backendEnv := map[string]string{
		"ES_INDEX_PREFIX": prefix, "NATS_URL": ns.URL(), "LISTEN_ADDR": testenv.FreeAddr(t),
		"TLS_MODE": "file", "TLS_CERT_FILE": certFile, "TLS_KEY_FILE": keyFile,
		"API_KEYS": key, "CORS_ALLOWED_ORIGINS": elsewhere.URL,
	}
	backend := startBackendProcess(t, backendEnv)
	origin := "https://" + backend.listen
	waitHTTPS(t, ca, origin+"/healthz")
	// Chromium trusts the backend's certificate, and only that one.
	spki := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
	tab := startChromium(t, chromiumBin, base64.StdEncoding.EncodeToString(spki[:]))
	// When the page waits in vain, whether the backend sent what it waited for.
	tab.explain = func() string { return followMetrics(ca, origin, key) }

	// Four cameras, a frame each every 10 s, from 20 minutes ago: inside the
	// page's default range, the last hour. Rounds 1 to 15 are 0 to 140 s into
	// the first minute: 60 frames, ten more than the table shows at once.
	js := testenv.JetStream(t, ns.URL())
	stored := &sample.Generator{Start: time.Now().Truncate(time.Minute).Add(-20 * time.Minute), Interval: 10 * time.Second, Cameras: 4}
	frames := publishNext(t, js, stored, 60)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitAllAcked(t, ctx, js, "ANNOTATIONS", "webserver", 60)
	refresh(t, esURL, prefix)

	tab.do(t, chromedp.Navigate(origin+"/"))
	tab.do(t, chromedp.Click(chromedp.CSS("summary")), chromedp.SendKeys(chromedp.ID("key"), key))

	t.Run("a range: its total, its bars, the newest 50 documents, and More for the rest", func(t *testing.T) {
		tab.do(t, chromedp.Click(chromedp.ID("show")))
		got := tab.waitFor(t, "the range to load", complete)
		tab.screenshot(t, "range.png")
		want := pageState{Count: "60", Phase: "complete", Bars: barCounts(bucketsOf(frames, got.interval(t))), Rows: newest(frames, 50), More: true}
		if !got.equal(want) {
			t.Errorf("the page shows\n%+v\nwant\n%+v", got, want)
		}
		tab.do(t, chromedp.Click(chromedp.ID("more")))
		// The rows appear as they stream in, and More hides once the stream has
		// ended: wait for both, or a check between them sees More still there.
		got = tab.waitFor(t, "the next page, and More gone", func(s pageState) bool { return len(s.Rows) == 60 && !s.More })
		// Nothing repeated, nothing skipped: the page goes on after the last document shown.
		want.Rows, want.More = newest(frames, 60), false
		if !got.equal(want) {
			t.Errorf("after More the page shows\n%+v\nwant\n%+v", got, want)
		}
	})

	t.Run("a click on a bar narrows the range to its bucket, and Back widens it again", func(t *testing.T) {
		before := tab.state(t)
		buckets := bucketsOf(frames, before.interval(t))
		tab.do(t, chromedp.Click(chromedp.CSS("#bars rect:nth-of-type(2)")))
		got := tab.waitFor(t, "the bucket's range", func(s pageState) bool { return s.Phase == "complete" && s.Link != before.Link })
		bucket := buckets[1]
		if want := linkOf(bucket.start, bucket.start.Add(before.interval(t)), ""); got.Link != want {
			t.Errorf("link %s, want %s", got.Link, want)
		}
		in := framesIn(frames, bucket.start, bucket.start.Add(before.interval(t)))
		want := pageState{Count: fmt.Sprint(bucket.count), Phase: "complete", Bars: barCounts(bucketsOf(in, got.interval(t))), Rows: newest(in, 50)}
		if !got.equal(want) {
			t.Errorf("the page shows\n%+v\nwant\n%+v", got, want)
		}

		tab.script(t, "history.back()")
		got = tab.waitFor(t, "the wider range", func(s pageState) bool { return s.Phase == "complete" && s.Link == before.Link })
		if got.Count != "60" {
			t.Errorf("back on the wider range, count %s, want 60", got.Count)
		}
	})

	t.Run("dragging across bars narrows the range to the buckets dragged over", func(t *testing.T) {
		before := tab.state(t)
		buckets := bucketsOf(frames, before.interval(t))
		tab.do(t, chromedp.DragAndDrop(chromedp.CSS("#bars rect:nth-of-type(2)"), chromedp.CSS("#bars rect:nth-of-type(4)")))
		got := tab.waitFor(t, "the span's range", func(s pageState) bool { return s.Phase == "complete" && s.Link != before.Link })
		from, to := buckets[1].start, buckets[3].start.Add(before.interval(t))
		if want := linkOf(from, to, ""); got.Link != want {
			t.Errorf("link %s, want %s", got.Link, want)
		}
		if want := fmt.Sprint(len(framesIn(frames, from, to))); got.Count != want {
			t.Errorf("count %s, want %s", got.Count, want)
		}
	})

	// The range of the stored frames, as a link: what a person shares.
	storedFrom, storedTo := stored.Start, stored.Start.Add(5*time.Minute)
	t.Run("a link with a filter shows the documents that match it, at once", func(t *testing.T) {
		tab.do(t, chromedp.Navigate(origin+"/"+linkOf(storedFrom, storedTo, "camera_id:cam-02")))
		got := tab.waitFor(t, "the filtered range", complete)
		cam2 := slices.DeleteFunc(slices.Clone(frames), func(f sample.Frame) bool { return f.CameraID != "cam-02" })
		want := pageState{Count: "15", Phase: "complete", Bars: barCounts(bucketsOf(cam2, got.interval(t))), Rows: newest(cam2, 50)}
		if !got.equal(want) || got.Query != "camera_id:cam-02" {
			t.Errorf("the page shows\n%+v\nwant\n%+v, with the filter in its box", got, want)
		}
	})

	t.Run("an invalid filter: the API's message, beside the box", func(t *testing.T) {
		tab.fill(t, "q", "camera_id:(cam-01 or")
		tab.do(t, chromedp.Click(chromedp.ID("show")))
		got := tab.waitFor(t, "the refusal", func(s pageState) bool { return s.Phase == "failed" })
		if !strings.Contains(got.FilterProblem, "at character") || !strings.Contains(got.Status, "filter is not valid") {
			t.Errorf("beside the box %q, status %q: want the character at fault, and that the filter is not valid", got.FilterProblem, got.Status)
		}
	})

	t.Run("a filter on a field no document has: it matches nothing, and the page says why", func(t *testing.T) {
		tab.fill(t, "q", "camra_id:cam-02")
		tab.do(t, chromedp.Click(chromedp.ID("show")))
		got := tab.waitFor(t, "the answer", complete)
		if want := "no field camra_id: it matches nothing."; got.Count != "0" || got.FilterProblem != want {
			t.Errorf("count %s, beside the box %q; want 0 and %q", got.Count, got.FilterProblem, want)
		}
	})

	// Frames of now, so that they fall in a follow that starts now; a frame per
	// camera every 100 ms, in the current bucket or two.
	live := &sample.Generator{Start: time.Now(), Interval: 100 * time.Millisecond, Cameras: 4}
	hourAgo := time.Now().Add(-time.Hour).Truncate(time.Second)
	following := t.Run("follow: new frames appear, and the current bucket grows", func(t *testing.T) {
		tab.do(t, chromedp.Navigate(origin+"/?start="+hourAgo.UTC().Format(time.RFC3339)+"&follow=true"))
		got := tab.waitFor(t, "the follow to be live", func(s pageState) bool { return s.Phase == "live" })
		// Before any new frame: the newest stored frame of each camera.
		if want := latestFrames(4, 15); !slices.EqualFunc(got.Cameras, want, slices.Equal) {
			t.Errorf("cameras %v, want %v", got.Cameras, want)
		}
		live.Start = time.Now()
		frames = append(frames, publishNext(t, js, live, 32)...)
		tab.waitFor(t, "the new frames", func(s pageState) bool {
			return slices.EqualFunc(s.Cameras, latestFrames(4, 8), slices.Equal)
		})
		// getCounts is polled: the chart follows within a poll.
		got = tab.waitFor(t, "the chart to count them", func(s pageState) bool { return s.Count == "92" })
		tab.screenshot(t, "follow.png")
		if want := barCounts(bucketsOf(frames, got.interval(t))); !slices.Equal(got.Bars, want) {
			t.Errorf("bars %v, want %v", got.Bars, want)
		}
	})

	if following {
		// The connection breaks, and the page asks a new backend on the same
		// address to go on after the last document it received.
		backend.proc.Kill()
		startBackendProcess(t, backendEnv)
		frames = append(frames, publishNext(t, js, live, 8)...)
		t.Run("follow across a restart of the backend: it goes on where it was", func(t *testing.T) {
			got := tab.waitFor(t, "the frames after the restart", func(s pageState) bool {
				return s.Phase == "live" && s.Count == "100" && slices.EqualFunc(s.Cameras, latestFrames(4, 10), slices.Equal)
			})
			if want := barCounts(bucketsOf(frames, got.interval(t))); !slices.Equal(got.Bars, want) {
				t.Errorf("bars %v, want %v", got.Bars, want)
			}
		})
	}

	t.Run("a wrong key: the page says the API refused it", func(t *testing.T) {
		tab.do(t, chromedp.Navigate(origin+"/"+linkOf(storedFrom, storedTo, "")))
		tab.waitFor(t, "the range to load", complete)
		tab.fill(t, "key", "not-the-key-0123456789")
		tab.do(t, chromedp.Click(chromedp.ID("show")))
		tab.waitFor(t, "the API's answer", func(s pageState) bool {
			return s.Phase == "failed" && strings.Contains(s.Status, "The API refused the key") && strings.Contains(s.Status, "a valid API key is required")
		})
		tab.fill(t, "key", key)
	})

	t.Run("the page on another origin, allowed by CORS", func(t *testing.T) {
		// The key first: this origin's tab keeps its own.
		tab.do(t, chromedp.Navigate(elsewhere.URL+"/?api="+origin),
			chromedp.Click(chromedp.CSS("summary")), chromedp.SendKeys(chromedp.ID("key"), key))
		tab.do(t, chromedp.Navigate(elsewhere.URL+"/"+linkOf(storedFrom, storedTo, "")+"&api="+url.QueryEscape(origin)))
		if got := tab.waitFor(t, "the range to load", complete); got.Count != "60" {
			t.Errorf("count %s, want 60 (status %q)", got.Count, got.Status)
		}
	})

	t.Run("the page on an origin CORS does not allow: no answer, and it says so", func(t *testing.T) {
		unlisted := httptest.NewServer(http.FileServerFS(os.DirFS("../internal/api/web")))
		t.Cleanup(unlisted.Close)
		tab.do(t, chromedp.Navigate(unlisted.URL+"/?api="+origin),
			chromedp.Click(chromedp.CSS("summary")), chromedp.SendKeys(chromedp.ID("key"), key),
			chromedp.Click(chromedp.ID("show")))
		tab.waitFor(t, "the page to give up on this try", func(s pageState) bool {
			return s.Phase == "retrying" && strings.HasPrefix(s.Status, "no answer from "+origin) && s.Count == ""
		})
	})

	t.Run("an API whose rate limit refuses the page's requests: the page loads, and says so", func(t *testing.T) {
		// One request a minute: the page's own files do not count, its first
		// request passes, and the next is refused.
		limited := startBackendProcess(t, map[string]string{"ES_INDEX_PREFIX": prefix, "NATS_URL": ns.URL(), "RATE_LIMIT_REQUESTS": "1"})
		testenv.WaitHTTP(t, "http://"+limited.listen+"/healthz", 30*time.Second)
		tab.do(t, chromedp.Navigate("http://"+limited.listen+"/"+linkOf(storedFrom, storedTo, "")))
		got := tab.waitFor(t, "the refusal", func(s pageState) bool { return s.Phase == "retrying" })
		if !strings.Contains(got.Status, "The API refused: too many requests") || !strings.Contains(got.Status, "trying again in") {
			t.Errorf("status %q: want the rate limit's refusal, and when the page tries again", got.Status)
		}
	})
}

// publishNext sends the generator's next n frames, each with its message id, and
// returns them.
func publishNext(t *testing.T, js jetstream.JetStream, frames *sample.Generator, n int) []sample.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sent []sample.Frame
	for range n {
		f := frames.Next()
		data, _ := json.Marshal(f)
		if _, err := js.Publish(ctx, f.Subject("annotations"), data, jetstream.WithMsgID(f.MsgID())); err != nil {
			t.Fatalf("publish %s: %v", f.MsgID(), err)
		}
		sent = append(sent, f)
	}
	return sent
}

// waitHTTPS waits until url answers 200 over TLS with a certificate of ca.
func waitHTTPS(t testing.TB, ca *testenv.CA, url string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		res, err := client.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 within 30s: %v", url, err)
		}
	}
}

// followMetrics is what the backend's /metrics says of its followers.
func followMetrics(ca *testenv.CA, origin, key string) string {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	req, _ := http.NewRequest(http.MethodGet, origin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := client.Do(req)
	if err != nil {
		return "backend metrics: " + err.Error()
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var lines []string
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "backend_follow") && !strings.Contains(line, "_bucket{") || strings.HasPrefix(line, "backend_documents_streamed") {
			lines = append(lines, line)
		}
	}
	return "backend metrics:\n" + strings.Join(lines, "")
}

// pageState is what the page shows a person.
type pageState struct {
	Count         string     `json:"count"`
	Phase         string     `json:"phase"`
	Status        string     `json:"status"`
	Interval      string     `json:"interval"`      // "a bar per 30s"
	Bars          []int      `json:"bars"`          // the counts of the bars drawn, in time order
	Rows          []string   `json:"rows"`          // of the documents table: "cam-01 #15"
	More          bool       `json:"more"`          // the More button shows
	Cameras       [][]string `json:"cameras"`       // rows of the latest-frame table: camera, frame
	Query         string     `json:"query"`         // the filter box
	FilterProblem string     `json:"filterProblem"` // what the page says beside the filter box
	Link          string     `json:"link"`          // location.search
}

// equal compares what the tests of a range look at: the counts, the bars and the
// documents listed.
func (s pageState) equal(o pageState) bool {
	return s.Count == o.Count && s.Phase == o.Phase && slices.Equal(s.Bars, o.Bars) &&
		slices.Equal(s.Rows, o.Rows) && s.More == o.More
}

func complete(s pageState) bool { return s.Phase == "complete" }

// interval is the length of a bar the page says it used.
func (s pageState) interval(t *testing.T) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(strings.TrimPrefix(s.Interval, "· a bar per "))
	if err != nil {
		t.Fatalf("the page shows no interval a test can read: %q", s.Interval)
	}
	return d
}

// bucket is a bar as the test expects it: getCounts's buckets are aligned to
// round times of their interval, in UTC.
type bucket struct {
	start time.Time
	count int
}

// bucketsOf counts frames per interval, leaving out empty buckets as the chart does.
func bucketsOf(frames []sample.Frame, interval time.Duration) []bucket {
	count := map[time.Time]int{}
	for _, f := range frames {
		ts, _ := time.Parse(time.RFC3339, f.Timestamp)
		count[ts.Truncate(interval)]++
	}
	var buckets []bucket
	for _, start := range slices.SortedFunc(maps.Keys(count), time.Time.Compare) {
		buckets = append(buckets, bucket{start, count[start]})
	}
	return buckets
}

func barCounts(buckets []bucket) []int {
	var counts []int
	for _, b := range buckets {
		counts = append(counts, b.count)
	}
	return counts
}

// framesIn are the frames from from (inclusive) to to (exclusive).
func framesIn(frames []sample.Frame, from, to time.Time) []sample.Frame {
	var in []sample.Frame
	for _, f := range frames {
		if ts, _ := time.Parse(time.RFC3339, f.Timestamp); !ts.Before(from) && ts.Before(to) {
			in = append(in, f)
		}
	}
	return in
}

// newest is the documents table of n rows: the newest frames first, and among
// frames of one time, the one published last (the API's tie-break).
func newest(frames []sample.Frame, n int) []string {
	sorted := slices.Clone(frames)
	slices.Reverse(sorted) // published in time order
	slices.SortStableFunc(sorted, func(a, b sample.Frame) int { return strings.Compare(b.Timestamp, a.Timestamp) })
	var rows []string
	for _, f := range sorted[:min(n, len(sorted))] {
		rows = append(rows, fmt.Sprintf("%s #%d", f.CameraID, f.Frame))
	}
	return rows
}

// linkOf is the page's link to a range, as the page writes it: start, end, q,
// in that order, the dates as JavaScript's toISOString writes them.
func linkOf(from, to time.Time, q string) string {
	const iso = "2006-01-02T15:04:05.000Z"
	link := "?start=" + url.QueryEscape(from.UTC().Format(iso)) + "&end=" + url.QueryEscape(to.UTC().Format(iso))
	if q != "" {
		link += "&q=" + url.QueryEscape(q)
	}
	return link
}

// latestFrames is the table of n cameras whose latest frame is frame.
func latestFrames(n, frame int) [][]string {
	var rows [][]string
	for i := 1; i <= n; i++ {
		rows = append(rows, []string{fmt.Sprintf("cam-%02d", i), fmt.Sprint(frame)})
	}
	return rows
}

const readPage = `(() => {
	const $ = id => document.getElementById(id);
	return {
		count: $('count').textContent,
		phase: $('phase').textContent,
		status: $('status').textContent,
		interval: $('interval').textContent,
		bars: [...document.querySelectorAll('#bars rect')].map(r => Number(r.textContent.match(/: (\d+)$/)[1])),
		rows: [...document.querySelectorAll('#documents tr')].map(tr => tr.cells[1].textContent + ' #' + tr.cells[2].textContent),
		more: !$('more').hidden,
		cameras: [...document.querySelectorAll('#cameras tr')].map(tr => [tr.cells[0].textContent, tr.cells[2].textContent]),
		query: $('q').value,
		filterProblem: $('q-problem').textContent,
		link: location.search,
	};
})()`

// chromiumPath finds Debian's chromium, or skips the test where there is none;
// under CI there must be one.
func chromiumPath(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium is not installed (apt-get install chromium): %v", err)
		}
		t.Skip("chromium is not installed (apt-get install chromium); with CI=true this is a failure")
	}
	return path
}

// chromium is a tab of a headless Chromium.
type chromium struct {
	ctx     context.Context
	explain func() string // more to say when a wait fails
}

// startChromium starts the browser at path with one tab, trusting the
// certificate whose public key has the given SHA-256 (base64). Its clock reads a
// zone half an hour off whole hours from UTC, so that a local time taken for
// UTC, or the other way round, would show.
func startChromium(t testing.TB, path, trustedSPKI string) *chromium {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.WindowSize(1100, 1000),
		chromedp.Flag("ignore-certificate-errors-spki-list", trustedSPKI),
		chromedp.Env("TZ=Asia/Kolkata"),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox refuses to run as root
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // the first Do starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return &chromium{ctx: ctx}
}

func (c *chromium) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v (the page shows %+v)", err, c.state(t))
	}
}

// script runs the JavaScript statement js in the page.
func (c *chromium) script(t *testing.T, js string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("("+js+", true)")); err != nil {
		t.Fatalf("run %s: %v", js, err)
	}
}

// fill sets the input whose id is given to value, as typing would: the page
// hears an input event.
func (c *chromium) fill(t *testing.T, id, value string) {
	t.Helper()
	args, _ := json.Marshal([]string{id, value})
	c.script(t, `((id, value) => {
		const input = document.getElementById(id);
		input.value = value;
		input.dispatchEvent(new Event('input'));
	})(...`+string(args)+`)`)
}

func (c *chromium) state(t *testing.T) pageState {
	t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](readPage))
	if err != nil {
		t.Fatalf("read the page: %v", err)
	}
	return s
}

// waitFor waits up to 20 s until the page shows what done accepts, and no
// longer once the page has given up.
func (c *chromium) waitFor(t *testing.T, what string, done func(pageState) bool) pageState {
	t.Helper()
	var s pageState
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if s = c.state(t); done(s) {
			return s
		}
		if s.Phase == "failed" {
			break
		}
	}
	c.screenshot(t, "timeout.png")
	more := ""
	if c.explain != nil {
		more = "\n" + c.explain()
	}
	t.Fatalf("waiting for %s; the page shows %+v%s", what, s, more)
	return s
}

// screenshot keeps an image of the page in the test's artifact directory (go
// test -artifacts keeps it after the run).
func (c *chromium) screenshot(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	t.Logf("screenshot: %s", path)
}
