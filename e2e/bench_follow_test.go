//go:build integration && bench

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// BenchmarkFollowLatency measures the time from publish to a follower's
// client reading the document over SSE (publisher and client in this process:
// one clock), in the cases the live target names, each on its own pipeline:
//
//   - 1/s: one frame a second for BENCH_FOLLOW_SLOW_SECONDS (default 60), one
//     follower; target p99 ≤ 300 ms;
//   - 1000/s: BENCH_FOLLOW_RATE frames a second (default 1,000) for
//     BENCH_FOLLOW_SECONDS (default 20), one follower; target p99 ≤ 300 ms;
//   - 1000/s,50_followers: the same with 50 followers of different ranges;
//     target p99 ≤ 400 ms;
//   - 1000/s,no_followers: the same publishing with nobody following, so no
//     refreshes: the baseline for what following costs Elasticsearch.
//
// Beside p50 and p99, and p99 against the target as a ratio (≤ 1 meets it), it
// reports the refreshes a second the backend asked of Elasticsearch, and the
// backend's and (when it is the local node) Elasticsearch's CPU per second.
// Run it with `make bench`.
func BenchmarkFollowLatency(b *testing.B) {
	rate := envInt(b, "BENCH_FOLLOW_RATE", 1000)
	seconds := envInt(b, "BENCH_FOLLOW_SECONDS", 20)
	for _, c := range []struct {
		name                    string
		rate, seconds, follower int
		target                  time.Duration
	}{
		{"1/s", 1, envInt(b, "BENCH_FOLLOW_SLOW_SECONDS", 60), 1, 300 * time.Millisecond},
		{fmt.Sprintf("%d/s", rate), rate, seconds, 1, 300 * time.Millisecond},
		{fmt.Sprintf("%d/s,50_followers", rate), rate, seconds, 50, 400 * time.Millisecond},
		{fmt.Sprintf("%d/s,no_followers", rate), rate, seconds, 0, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			// Every follower is this process: one client to the backend.
			base, js, backend := startFollowPipeline(b, map[string]string{
				"API_MAX_STREAMS": "128", "API_MAX_FOLLOWERS": "100", "API_MAX_STREAMS_PER_CLIENT": "128", "RATE_LIMIT_REQUESTS": "0",
			})
			for b.Loop() {
				m := followLive(b, base, js, backend, c.follower, c.rate, c.seconds, nil)
				b.ReportMetric(m.refreshes, "refreshes/s")
				b.ReportMetric(m.cpuMS, "backend_cpu_ms/s")
				b.ReportMetric(m.esCPUMS, "es_cpu_ms/s")
				if c.follower == 0 {
					b.Logf("nobody following at %d/s: %.1f refreshes/s, backend CPU %.0f ms/s, Elasticsearch CPU %.0f ms/s", c.rate, m.refreshes, m.cpuMS, m.esCPUMS)
					continue
				}
				b.Logf("%d deliveries to %d followers at %d/s: publish to delivery p50 %s, p99 %s, max %s (target p99 ≤ %s); %.1f refreshes/s, backend CPU %.0f ms/s, Elasticsearch CPU %.0f ms/s",
					len(m.latency), c.follower, c.rate, m.p50.Round(time.Millisecond), m.p99.Round(time.Millisecond), m.max.Round(time.Millisecond), c.target, m.refreshes, m.cpuMS, m.esCPUMS)
				b.ReportMetric(float64(m.p50.Milliseconds()), "p50_ms")
				b.ReportMetric(float64(m.p99.Milliseconds()), "p99_ms")
				b.ReportMetric(float64(m.p99)/float64(c.target), "p99/target")
			}
		})
	}
}

// BenchmarkFollowAcrossAKill kills the webserver with SIGKILL halfway through
// BENCH_FOLLOW_SECONDS (default 20) of BENCH_FOLLOW_RATE frames a second
// (default 1,000) and starts it again at once; the messages it held come back
// after NATS_ACK_WAIT, and the ack floor, which followers wait on, with them. It
// reports the longest time the follower received nothing, against the target
// of 5 s (gap/target ≤ 1 meets it).
func BenchmarkFollowAcrossAKill(b *testing.B) {
	rate := envInt(b, "BENCH_FOLLOW_RATE", 1000)
	seconds := envInt(b, "BENCH_FOLLOW_SECONDS", 20)
	const target = 5 * time.Second
	base, js, backend, restart := startFollowPipelineWith(b, nil)
	for b.Loop() {
		m := followLive(b, base, js, backend, 1, rate, seconds, func() {
			time.Sleep(time.Duration(seconds) * time.Second / 2)
			restart()
		})
		b.Logf("%d deliveries at %d/s across a kill -9 of the webserver: longest gap %s (target ≤ %s), p99 %s",
			len(m.latency), rate, m.gap.Round(time.Millisecond), target, m.p99.Round(time.Millisecond))
		b.ReportMetric(m.gap.Seconds(), "gap_s")
		b.ReportMetric(float64(m.gap)/float64(target), "gap/target")
	}
}

// followAll starts an SSE follower of each query until ctx ends, and returns
// once all of them are live; wait on the WaitGroup after ending ctx.
func followAll(b *testing.B, ctx context.Context, base string, queries []string) ([]*received, *sync.WaitGroup) {
	wg := &sync.WaitGroup{}
	got := make([]*received, len(queries))
	for i, query := range queries {
		got[i] = newTally()
		wg.Go(func() {
			if _, err := follow(ctx, base, query, true, "", got[i]); err != nil && ctx.Err() == nil {
				got[i].mu.Lock()
				got[i].failure = err.Error()
				got[i].mu.Unlock()
			}
		})
	}
	for deadline := time.Now().Add(time.Minute); !allLive(got); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("followers not live after a minute")
		}
	}
	return got, wg
}

// liveFigures are what followLive measured.
type liveFigures struct {
	latency       []time.Duration
	p50, p99, max time.Duration
	gap           time.Duration // the longest time a follower received nothing
	refreshes     float64       // per second, asked by the backend
	cpuMS         float64       // the backend's, per second
	esCPUMS       float64       // Elasticsearch's, per second, when it is the local node (else 0)
}

// followLive attaches followers (of ranges starting a minute apart, all
// covering now) to the backend at base, publishes rate frames a second for
// seconds while meanwhile runs (if not nil), waits until every follower has
// every frame, and measures.
func followLive(b *testing.B, base string, js jetstream.JetStream, backend *testenv.Process, followers, rate, seconds int, meanwhile func()) liveFigures {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+3*time.Minute)
	defer cancel()
	queries := make([]string, followers)
	for i := range queries {
		queries[i] = rangeParams(time.Now().Add(-time.Duration(i+1)*time.Minute), nil)
	}
	got, wg := followAll(b, ctx, base, queries)
	defer wg.Wait()
	defer cancel()
	before := scrapeSeries(b, base+"/metrics")
	cpu0, _ := backend.CPUTime()
	esCPU := cpuOf(b, testenv.ElasticsearchPID(testenv.ElasticsearchURL(b)))
	if meanwhile != nil {
		go meanwhile()
	}
	pub := newLivePublisher(b, ctx, js)
	pub.frames(rate*seconds, rate)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		done := true
		for _, r := range got {
			if n, _, _, failure := r.snapshot(); n < pub.good && failure == "" {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			break
		}
	}
	took := time.Duration(seconds) * time.Second
	after := scrapeSeries(b, base+"/metrics")
	cpu1, _ := backend.CPUTime()
	es := esCPU()
	cancel()
	wg.Wait()

	var m liveFigures
	for i, r := range got {
		if r.failure != "" || len(r.docs) != pub.good || len(r.repeats) > 0 {
			b.Fatalf("follower %d got %d of %d documents, %d twice (failure %q)", i, len(r.docs), pub.good, len(r.repeats), r.failure)
		}
		m.latency = append(m.latency, r.latency...)
		m.gap = max(m.gap, r.gap)
	}
	slices.Sort(m.latency)
	if len(m.latency) > 0 {
		m.p50, m.p99, m.max = percentile(m.latency, 0.50), percentile(m.latency, 0.99), m.latency[len(m.latency)-1]
	}
	refresh := `backend_elasticsearch_request_duration_seconds_count{operation="refresh"}`
	m.refreshes = (after[refresh] - before[refresh]) / took.Seconds()
	m.cpuMS = float64((cpu1 - cpu0).Milliseconds()) / took.Seconds()
	m.esCPUMS = float64(es.Milliseconds()) / took.Seconds()
	return m
}

// startFollowPipeline runs a webserver and a backend (with env besides the
// defaults) on their own NATS and index prefix, and returns the backend's
// address, the stream to publish to, and the backend's process.
func startFollowPipeline(b *testing.B, env map[string]string) (string, jetstream.JetStream, *testenv.Process) {
	base, js, backend, _ := startFollowPipelineWith(b, env)
	return base, js, backend
}

// startFollowPipelineWith is startFollowPipeline that also returns a function
// that kills the webserver with SIGKILL and starts another in its place at once.
func startFollowPipelineWith(b *testing.B, env map[string]string) (string, jetstream.JetStream, *testenv.Process, func()) {
	ns := testenv.StartNATS(b)
	esURL := testenv.ElasticsearchURL(b)
	prefix := testenv.IndexPrefix(b, esURL)
	js := testenv.JetStream(b, ns.URL())
	webserverEnv := map[string]string{
		"NATS_URL": ns.URL(), "ELASTICSEARCH_URL": esURL, "ES_INDEX_PREFIX": prefix, "ES_INDEX_REPLICAS": "0",
	}
	startWebserver := func() *testenv.Process {
		admin := testenv.FreeAddr(b)
		p := testenv.StartProcess(b, binary(b, "webserver"), testenv.WithEnv(webserverEnv, map[string]string{"ADMIN_ADDR": admin}))
		testenv.WaitHTTP(b, "http://"+admin+"/readyz", time.Minute)
		return p
	}
	var mu sync.Mutex
	webserver := startWebserver()
	restart := func() {
		mu.Lock()
		defer mu.Unlock()
		webserver.Kill()
		webserver = startWebserver()
	}
	listen := testenv.FreeAddr(b)
	full := map[string]string{
		"NATS_URL": ns.URL(), "ELASTICSEARCH_URL": esURL, "ES_INDEX_PREFIX": prefix, "LISTEN_ADDR": listen,
	}
	maps.Copy(full, env)
	backend := testenv.StartProcess(b, binary(b, "backend"), full)
	testenv.WaitHTTP(b, "http://"+listen+"/readyz", time.Minute)
	return "http://" + listen, js, backend, restart
}

// percentile of sorted durations.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// BenchmarkFollowFilters measures what filters cost the shared follow steps:
// 1 follower, 50 without q, and 50 each with a q of its own (50 distinct named
// queries in each step's one search), while BENCH_FOLLOW_RATE frames a second
// (default 500) are published for BENCH_FOLLOW_SECONDS (default 20) per case.
// It reports, per step that found new documents, from the backend's /metrics:
// the step's time (step_ms), the time of its Elasticsearch search(es)
// (search_ms/step, and searches/step) and refresh (refresh_ms/step), the
// documents it read (docs/step); the backend's CPU per second of publishing
// (backend_cpu_ms/s); and publish-to-delivery latency over every follower
// (p50_ms, p99_ms). Every follower must get exactly the frames its q selects.
func BenchmarkFollowFilters(b *testing.B) {
	rate := envInt(b, "BENCH_FOLLOW_RATE", 500)
	seconds := envInt(b, "BENCH_FOLLOW_SECONDS", 20)
	base, js, backend := startFollowPipeline(b, map[string]string{
		"API_MAX_STREAMS": "128", "API_MAX_FOLLOWERS": "100", "API_MAX_STREAMS_PER_CLIENT": "128",
		"RATE_LIMIT_REQUESTS": "0",
	})
	const cameras = 10
	rounds := rate * seconds / cameras // frames per camera and case
	var filters []string
	for c := range cameras {
		for k := range 5 {
			filters = append(filters, fmt.Sprintf("camera_id:cam-%02d and frame >= %d", c+1, 1+k*rounds/5))
		}
	}
	cases := []struct {
		name string
		qs   []string
	}{
		{"followers=1", []string{""}},
		{"followers=50", make([]string, 50)},
		{"followers=50/filters=50", filters},
	}
	published := 0 // frames of earlier cases: ids go on from there
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				published += followFilters(b, base, js, backend, c.qs, published, rate, seconds, cameras)
			}
		})
	}
}

// followFilters runs one case of BenchmarkFollowFilters: a follower per q,
// frames numbered from 1 again (ids after the n published before), and
// returns how many frames it published.
func followFilters(b *testing.B, base string, js jetstream.JetStream, backend *testenv.Process, qs []string, n, rate, seconds, cameras int) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+3*time.Minute)
	defer cancel()
	from := time.Now() // the frames of earlier cases are before: no history
	queries := make([]string, len(qs))
	for i, q := range qs {
		queries[i] = rangeParams(from, nil)
		if q != "" {
			queries[i] += "&q=" + url.QueryEscape(q)
		}
	}
	got, wg := followAll(b, ctx, base, queries)
	defer wg.Wait()
	defer cancel()

	before := scrapeSeries(b, base+"/metrics")
	cpu0, _ := backend.CPUTime()
	pub := newLivePublisher(b, ctx, js)
	pub.n = n
	pub.gen = &sample.Generator{Cameras: cameras}
	pub.frames(rate*seconds, rate)
	want := make([]int, len(qs))
	for _, s := range pub.sent {
		var f labelledFrame
		json.Unmarshal(s.data, &f)
		for i, q := range qs {
			if q == "" || selects(q, f) {
				want[i]++
			}
		}
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		done := true
		for i, r := range got {
			if n, _, _, failure := r.snapshot(); n < want[i] && failure == "" {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(time.Second) // the last step is observed after its hand-out
	after := scrapeSeries(b, base+"/metrics")
	cpu1, _ := backend.CPUTime()
	cancel()
	wg.Wait()

	var lat []time.Duration
	for i, r := range got {
		if r.failure != "" || len(r.docs) != want[i] || len(r.repeats) > 0 {
			b.Fatalf("follower %d (q %q) got %d of %d documents, %d twice (failure %q)", i, qs[i], len(r.docs), want[i], len(r.repeats), r.failure)
		}
		lat = append(lat, r.latency...)
	}
	slices.Sort(lat)
	delta := func(series string) float64 { return after[series] - before[series] }
	steps := delta(`backend_follow_step_duration_seconds_count{outcome="ok"}`)
	if steps == 0 {
		b.Fatalf("no follow step was observed")
	}
	perStepMS := func(series string) float64 { return delta(series) * 1000 / steps }
	stepMS := perStepMS(`backend_follow_step_duration_seconds_sum{outcome="ok"}`)
	searchMS := perStepMS(`backend_elasticsearch_request_duration_seconds_sum{operation="search"}`)
	refreshMS := perStepMS(`backend_elasticsearch_request_duration_seconds_sum{operation="refresh"}`)
	searches := delta(`backend_elasticsearch_request_duration_seconds_count{operation="search"}`) / steps
	docs := delta("backend_follow_step_documents_total") / steps
	cpuMS := float64((cpu1 - cpu0).Milliseconds()) / float64(seconds)
	p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
	b.Logf("%d followers, %d distinct q, %d frames at %d/s: %.0f steps of %.1f ms (search %.1f ms in %.2f requests, refresh %.1f ms), %.0f documents a step; backend CPU %.0f ms/s; %d deliveries, p50 %s, p99 %s",
		len(qs), distinct(qs), pub.good, rate, steps, stepMS, searchMS, searches, refreshMS, docs, cpuMS, len(lat), p50.Round(time.Millisecond), p99.Round(time.Millisecond))
	b.ReportMetric(stepMS, "step_ms")
	b.ReportMetric(searchMS, "search_ms/step")
	b.ReportMetric(searches, "searches/step")
	b.ReportMetric(refreshMS, "refresh_ms/step")
	b.ReportMetric(docs, "docs/step")
	b.ReportMetric(cpuMS, "backend_cpu_ms/s")
	b.ReportMetric(float64(p50.Milliseconds()), "p50_ms")
	b.ReportMetric(float64(p99.Milliseconds()), "p99_ms")
	return pub.n - n
}

// selects is what the benchmark's q (camera_id:cam-NN and frame >= K) means.
func selects(q string, f labelledFrame) bool {
	var camera string
	var frame uint64
	if _, err := fmt.Sscanf(q, "camera_id:%s and frame >= %d", &camera, &frame); err != nil {
		panic("a q the benchmark does not know: " + q)
	}
	return f.Camera == camera && f.Frame >= frame
}

func allLive(got []*received) bool {
	for _, r := range got {
		if _, live, _, failure := r.snapshot(); !live && failure == "" {
			return false
		}
	}
	return true
}

func distinct(qs []string) int {
	return len(slices.Compact(slices.Sorted(slices.Values(qs))))
}

// scrapeSeries reads every sample of a Prometheus text exposition, labelled
// ones by their whole series (name{labels}).
func scrapeSeries(tb testing.TB, u string) map[string]float64 {
	tb.Helper()
	res, err := http.Get(u)
	if err != nil {
		tb.Fatalf("scrape %s: %v", u, err)
	}
	defer res.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
