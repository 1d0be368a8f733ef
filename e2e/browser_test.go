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
	"net/http"
	"net/http/httptest"
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
// of a range, and of the frames that arrive while they follow it. The backend
// serves HTTPS and wants an API key, as in production.
func TestBrowserShowsARangeAndFollowsNewFrames(t *testing.T) {
	chromiumBin := chromiumPath(t)

	ns := testenv.StartNATS(t)
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
	// page's default range, the last hour. The first 60 frames are stored before
	// the page asks; the next 60 arrive while it follows.
	js := testenv.JetStream(t, ns.URL())
	frames := &sample.Generator{Start: time.Now().Truncate(time.Minute).Add(-20 * time.Minute), Interval: 10 * time.Second, Cameras: 4}
	publishNext(t, js, frames, 60)
	published := 60
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitAllAcked(t, ctx, js, "ANNOTATIONS", "webserver", 60)
	refresh(t, esURL, prefix)

	tab.do(t, chromedp.Navigate(origin+"/"))
	tab.do(t, chromedp.Click(chromedp.CSS("summary")), chromedp.SendKeys(chromedp.ID("key"), key))

	t.Run("a range: its count, its bars per minute, each camera's latest frame", func(t *testing.T) {
		tab.do(t, chromedp.Click(chromedp.ID("show")))
		got := tab.waitFor(t, "the range to load", func(s pageState) bool { return s.Phase == "complete" })
		tab.screenshot(t, "range.png")
		// Rounds 0 to 14 are 0 to 140 s into the first minute: three minutes.
		want := pageState{Count: "60", Phase: "complete", Bars: 3, Cameras: latestFrames(4, 15)}
		if !got.equal(want) {
			t.Errorf("the page shows %+v, want %+v", got, want)
		}
	})

	following := t.Run("follow: the stored frames, then each new one once", func(t *testing.T) {
		tab.do(t, chromedp.Click(chromedp.ID("follow")), chromedp.Click(chromedp.ID("show")))
		tab.waitFor(t, "the history to be sent", func(s pageState) bool { return s.Phase == "live" && s.Count == "60" })
		publishNext(t, js, frames, 30)
		published += 30
		tab.waitFor(t, "the new frames", func(s pageState) bool { return s.Count == "90" })
	})

	if following {
		// The connection breaks, and the page asks a new backend on the same
		// address to go on after the last document it received.
		backend.proc.Kill()
		startBackendProcess(t, backendEnv)
		publishNext(t, js, frames, 30)
		published += 30
		t.Run("follow across a restart of the backend: nothing missed, nothing repeated", func(t *testing.T) {
			tab.waitFor(t, "the frames after the restart", func(s pageState) bool { return s.Count == "120" && s.Phase == "live" })
			tab.screenshot(t, "follow.png")
			time.Sleep(time.Second) // long enough for a duplicate to show
			got := tab.state(t)
			want := pageState{Count: "120", Phase: "live", Bars: 5, Cameras: latestFrames(4, 30)}
			if !got.equal(want) || !strings.HasPrefix(got.Status, "Reconnected") {
				t.Errorf("the page shows %+v, want %+v, reconnected", got, want)
			}
		})
	}

	t.Run("a link shows its range at once, with the key the tab keeps", func(t *testing.T) {
		now := time.Now().UTC()
		link := fmt.Sprintf("%s/?start=%s&end=%s", origin, now.Add(-time.Hour).Format(time.RFC3339), now.Format(time.RFC3339))
		tab.do(t, chromedp.Navigate(link))
		got := tab.waitFor(t, "the range to load", func(s pageState) bool { return s.Phase == "complete" })
		if want := fmt.Sprint(published); got.Count != want {
			t.Errorf("count %s, want %s (status %q)", got.Count, want, got.Status)
		}
	})

	t.Run("a wrong key: the API's message", func(t *testing.T) {
		tab.do(t, chromedp.SetValue(chromedp.ID("key"), "not-the-key-0123456789"), chromedp.Click(chromedp.ID("show")))
		tab.waitFor(t, "the API's answer", func(s pageState) bool {
			return s.Phase == "failed" && strings.Contains(s.Status, "a valid API key is required")
		})
	})

	t.Run("the page on another origin, allowed by CORS", func(t *testing.T) {
		tab.do(t, chromedp.Navigate(elsewhere.URL+"/?api="+origin),
			chromedp.Click(chromedp.CSS("summary")), chromedp.SendKeys(chromedp.ID("key"), key),
			chromedp.Click(chromedp.ID("show")))
		got := tab.waitFor(t, "the range to load", func(s pageState) bool { return s.Phase == "complete" })
		if want := fmt.Sprint(published); got.Count != want {
			t.Errorf("count %s, want %s (status %q)", got.Count, want, got.Status)
		}
	})

	t.Run("the page on an origin CORS does not allow: no answer, and it says so", func(t *testing.T) {
		unlisted := httptest.NewServer(http.FileServerFS(os.DirFS("../internal/api/web")))
		t.Cleanup(unlisted.Close)
		tab.do(t, chromedp.Navigate(unlisted.URL+"/?api="+origin),
			chromedp.Click(chromedp.CSS("summary")), chromedp.SendKeys(chromedp.ID("key"), key),
			chromedp.Click(chromedp.ID("show")))
		tab.waitFor(t, "the page to give up on this try", func(s pageState) bool {
			return s.Phase == "reconnecting" && strings.HasPrefix(s.Status, "no answer from "+origin) && s.Count == "0"
		})
	})
}

// publishNext sends the generator's next n frames, each with its message id.
func publishNext(t *testing.T, js jetstream.JetStream, frames *sample.Generator, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range n {
		f := frames.Next()
		data, _ := json.Marshal(f)
		if _, err := js.Publish(ctx, f.Subject("annotations"), data, jetstream.WithMsgID(f.MsgID())); err != nil {
			t.Fatalf("publish %s: %v", f.MsgID(), err)
		}
	}
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
	Count   string     `json:"count"`
	Phase   string     `json:"phase"`
	Status  string     `json:"status"`
	Bars    int        `json:"bars"`    // of the chart
	Cameras [][]string `json:"cameras"` // rows of the latest-frame table: camera, frame
}

func (s pageState) equal(o pageState) bool {
	return s.Count == o.Count && s.Phase == o.Phase && s.Bars == o.Bars &&
		slices.EqualFunc(s.Cameras, o.Cameras, slices.Equal)
}

// latestFrames is the table of n cameras whose latest frame is frame.
func latestFrames(n, frame int) [][]string {
	var rows [][]string
	for i := 1; i <= n; i++ {
		rows = append(rows, []string{fmt.Sprintf("cam-%02d", i), fmt.Sprint(frame)})
	}
	return rows
}

const readPage = `({
	count: document.getElementById('count').textContent,
	phase: document.getElementById('phase').textContent,
	status: document.getElementById('status').textContent,
	bars: document.querySelectorAll('#chart rect').length,
	cameras: [...document.querySelectorAll('#cameras tr')].map(tr => [tr.cells[0].textContent, tr.cells[2].textContent]),
})`

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
