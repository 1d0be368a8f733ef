//go:build integration

package e2e

import (
	"context"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// BenchmarkFollowLatency publishes BENCH_FOLLOW_RATE frames a second (default
// 1,000) for BENCH_FOLLOW_SECONDS (default 20) to a webserver, with one SSE
// follower attached to the backend, and reports the time from publish to
// delivery to the follower: p50 and p99, and p99 against the target of
// refresh_interval + 1 s (ES_INDEX_REFRESH_INTERVAL and FOLLOW_POLL_INTERVAL at
// their defaults of 1 s) as a ratio (≤ 1 meets it). Run it with `make bench`.
func BenchmarkFollowLatency(b *testing.B) {
	rate := envInt(b, "BENCH_FOLLOW_RATE", 1000)
	seconds := envInt(b, "BENCH_FOLLOW_SECONDS", 20)
	const refreshInterval = time.Second
	target := refreshInterval + time.Second

	ns := testenv.StartNATS(b)
	esURL := testenv.ElasticsearchURL(b)
	prefix := testenv.IndexPrefix(b, esURL)
	js := testenv.JetStream(b, ns.URL())
	admin := testenv.FreeAddr(b)
	testenv.StartProcess(b, binary(b, "webserver"), map[string]string{
		"NATS_URL": ns.URL(), "ELASTICSEARCH_URL": esURL, "ES_INDEX_PREFIX": prefix,
		"ES_INDEX_REPLICAS": "0", "ADMIN_ADDR": admin,
	})
	testenv.WaitHTTP(b, "http://"+admin+"/readyz", time.Minute)
	listen := testenv.FreeAddr(b)
	testenv.StartProcess(b, binary(b, "backend"), map[string]string{
		"NATS_URL": ns.URL(), "ELASTICSEARCH_URL": esURL, "ES_INDEX_PREFIX": prefix, "LISTEN_ADDR": listen,
	})
	testenv.WaitHTTP(b, "http://"+listen+"/readyz", time.Minute)
	base := "http://" + listen

	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+2*time.Minute)
		r := newReceived()
		query := "follow=true&start_date=" + url.QueryEscape(time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano))
		done := make(chan struct{})
		go func() {
			defer close(done)
			follow(ctx, base, query, true, "", r)
		}()
		for {
			if _, live, _, _ := r.snapshot(); live {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		pub := newLivePublisher(b, ctx, js)
		pub.frames(rate*seconds, rate)
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
			if n, _, _, _ := r.snapshot(); n >= pub.good || time.Now().After(deadline) {
				break
			}
		}
		cancel()
		<-done
		if r.failure != "" || len(r.docs) != pub.good {
			b.Fatalf("the follower got %d of %d documents (failure %q)", len(r.docs), pub.good, r.failure)
		}
		lat := slices.Clone(r.latency)
		slices.Sort(lat)
		p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
		b.Logf("%d documents at %d/s: publish to delivery p50 %s, p99 %s, max %s (target p99 ≤ %s)",
			len(lat), rate, p50.Round(time.Millisecond), p99.Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), target)
		b.ReportMetric(float64(p50.Milliseconds()), "p50_ms")
		b.ReportMetric(float64(p99.Milliseconds()), "p99_ms")
		b.ReportMetric(float64(p99)/float64(target), "p99/target")
	}
}

// percentile of sorted durations.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(float64(len(d))*p))]
}
