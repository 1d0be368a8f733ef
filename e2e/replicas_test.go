//go:build integration

package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// Backend replicas behind one load balancer, sharing autocert's cache in NATS
// (TLS_CACHE=nats): one order per name whatever the number of replicas, a dead
// order holder replaced, renewal ordered once, and no private key in clear in the
// bucket. The balancer is a round-robin TCP proxy for the HTTPS port (where the CA
// validates TLS-ALPN-01) and the HTTP-01 port, and Pebble's DNS resolves the
// domain to it.

const replicaDomain = "test.example"

// replicaSet is three backends behind round-robin proxies.
type replicaSet struct {
	pebble          *testenv.Pebble
	nats            *testenv.NATSServer
	https, http     *testenv.Proxy
	procs           []*testenv.Process
	listens         []string
	roots           *x509.CertPool
	leaseTTL        time.Duration
	challengeListen []string
}

// startReplicas starts n backends behind the balancer. With alpn false, nothing
// listens where Pebble validates TLS-ALPN-01, so certificates come over HTTP-01
// (after a first order that fails).
func startReplicas(t *testing.T, n int, leaseTTL time.Duration, alpn bool, pebbleOpts testenv.PebbleOptions) *replicaSet {
	t.Helper()
	rs := &replicaSet{nats: startNATS(t), leaseTTL: leaseTTL}
	for range n {
		rs.listens = append(rs.listens, testenv.FreeAddr(t))
		rs.challengeListen = append(rs.challengeListen, testenv.FreeAddr(t))
	}
	rs.https = testenv.NewRoundRobinProxy(t, rs.listens...)
	rs.http = testenv.NewRoundRobinProxy(t, rs.challengeListen...)
	tlsPort := testenv.PortOf(t, rs.https.Addr())
	if !alpn {
		tlsPort = testenv.PortOf(t, testenv.FreeAddr(t))
	}
	rs.pebble = testenv.StartPebbleWith(t, testenv.PortOf(t, rs.http.Addr()), tlsPort, pebbleOpts)
	rs.roots = rs.pebble.IssuerRoots(t)

	keyFile := filepath.Join(t.TempDir(), "tls-cache.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	for i := range n {
		rs.procs = append(rs.procs, startBackendProcess(t, map[string]string{
			"ES_INDEX_PREFIX":     prefix,
			"LISTEN_ADDR":         rs.listens[i],
			"TLS_MODE":            "autocert",
			"TLS_DOMAINS":         replicaDomain,
			"TLS_CACHE":           "nats",
			"NATS_URL":            rs.nats.URL(),
			"TLS_CACHE_KEY_FILE":  keyFile,
			"TLS_CACHE_LEASE_TTL": leaseTTL.String(),
			"ACME_DIRECTORY_URL":  rs.pebble.DirectoryURL,
			"ACME_CA_ROOTS":       rs.pebble.CARootsFile,
			"ACME_HTTP_ADDR":      rs.challengeListen[i],
		}).proc)
	}
	for _, addr := range append(rs.listens, rs.challengeListen...) {
		waitListening(t, addr, 60*time.Second)
	}
	return rs
}

func waitListening(t *testing.T, addr string, patience time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(patience); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after %s", addr, patience)
		}
	}
}

// serial is the serial number of the certificate served at addr, over a new
// connection; nil when the request fails.
func (rs *replicaSet) serial(addr string) (*big.Int, error) {
	client := httpsClient(rs.roots, replicaDomain, addr)
	res, err := client.Get("https://" + replicaDomain + "/healthz")
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /healthz: %s", res.Status)
	}
	return res.TLS.PeerCertificates[0].SerialNumber, nil
}

// firstRequests makes n concurrent HTTPS requests through the balancer, each
// retried until it succeeds or patience runs out, and returns the serials served.
func (rs *replicaSet) firstRequests(t *testing.T, n int, patience time.Duration) []*big.Int {
	t.Helper()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		serials []*big.Int
	)
	for range n {
		wg.Go(func() {
			deadline := time.Now().Add(patience)
			for {
				s, err := rs.serial(rs.https.Addr())
				if err == nil {
					mu.Lock()
					serials = append(serials, s)
					mu.Unlock()
					return
				}
				if time.Now().After(deadline) {
					t.Errorf("no HTTPS answer through the balancer within %s: %v", patience, err)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	return serials
}

// rawBucket is every value in the cache's bucket, as another NATS user reads it.
func (rs *replicaSet) rawBucket(t *testing.T) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	kv, err := testenv.JetStream(t, rs.nats.URL()).KeyValue(ctx, "AUTOCERT")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw := map[string][]byte{}
	for k := range keys.Keys() {
		if e, err := kv.Get(ctx, k); err == nil {
			raw[k] = e.Value()
		}
	}
	return raw
}

func TestReplicasBehindALoadBalancerShareOneCertificate(t *testing.T) {
	t.Parallel()
	// 60s certificates: autocert renews them 40 to 42s after issue, within the test.
	rs := startReplicas(t, 3, 20*time.Second, true, testenv.PebbleOptions{Validity: time.Minute})

	first := rs.firstRequests(t, 9, 90*time.Second)
	if t.Failed() {
		t.FailNow()
	}
	t.Run("exactly one order and one certificate", func(t *testing.T) {
		if orders, issued := rs.pebble.Orders(), rs.pebble.Issued(); orders != 1 || issued != 1 {
			t.Errorf("Pebble took %d orders and issued %d certificates, want 1 and 1", orders, issued)
		}
		for _, s := range first {
			if s.Cmp(first[0]) != 0 {
				t.Errorf("the balancer served serials %v and %v, want one certificate", first[0], s)
			}
		}
	})
	t.Run("every replica serves it", func(t *testing.T) {
		for i, addr := range rs.listens {
			if s, err := rs.serial(addr); err != nil || s.Cmp(first[0]) != 0 {
				t.Errorf("replica %d serves %v (%v), want %v", i, s, err, first[0])
			}
		}
	})
	t.Run("every replica exports the certificate's expiry", func(t *testing.T) {
		for i, addr := range rs.listens {
			res, err := httpsClient(rs.roots, replicaDomain, addr).Get("https://" + replicaDomain + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if !bytes.Contains(body, []byte(`backend_tls_certificate_expiry_timestamp_seconds{name="`+replicaDomain+`"}`)) {
				t.Errorf("replica %d's /metrics has no expiry for %s:\n%s", i, replicaDomain, body)
			}
		}
	})
	t.Run("no private key in clear in the bucket", func(t *testing.T) {
		raw := rs.rawBucket(t)
		if len(raw) < 2 {
			t.Fatalf("the bucket holds %d entries, want at least the account key and the certificate", len(raw))
		}
		for k, v := range raw {
			if bytes.Contains(v, []byte("PRIVATE KEY")) || bytes.Contains(v, []byte("-----BEGIN")) {
				t.Errorf("bucket entry %s holds PEM in clear", k)
			}
		}
	})
	t.Run("the renewal is ordered once and reaches every replica", func(t *testing.T) {
		deadline := time.Now().Add(90 * time.Second)
		for i, addr := range rs.listens {
			for {
				s, err := rs.serial(addr)
				if err == nil && s.Cmp(first[0]) != 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("replica %d still serves %v (%v), want a renewed certificate", i, s, err)
				}
				time.Sleep(500 * time.Millisecond)
			}
		}
		// The renewed certificate is due itself 40s after its issue; this is read
		// well before.
		if orders, issued := rs.pebble.Orders(), rs.pebble.Issued(); orders != 2 || issued != 2 {
			t.Errorf("after the renewal Pebble took %d orders and issued %d certificates, want 2 and 2", orders, issued)
		}
		renewed, _ := rs.serial(rs.listens[0])
		for i, addr := range rs.listens[1:] {
			if s, err := rs.serial(addr); err != nil || renewed == nil || s.Cmp(renewed) != 0 {
				t.Errorf("replica %d serves %v (%v), replica 0 %v: want the same renewed certificate", i+1, s, err, renewed)
			}
		}
	})
}

func TestWhenTheReplicaOrderingDiesAnotherOrdersAfterTheLease(t *testing.T) {
	t.Parallel()
	// Pebble waits up to 3s before validating, as a real CA may: the order is
	// still running when its replica is killed. HTTP-01 this time: whichever
	// replica the balancer hands the CA's request answers it from the bucket.
	const leaseTTL = 10 * time.Second
	rs := startReplicas(t, 3, leaseTTL, false, testenv.PebbleOptions{Env: map[string]string{"PEBBLE_VA_NOSLEEP": "0", "PEBBLE_VA_SLEEPTIME": "3"}})

	done := make(chan []*big.Int)
	go func() { done <- rs.firstRequests(t, 6, 3*time.Minute) }()

	holder := -1
	for deadline := time.Now().Add(60 * time.Second); holder < 0; time.Sleep(10 * time.Millisecond) {
		for i, p := range rs.procs {
			if strings.Contains(p.Output(), "ordering certificate; other replicas wait for it") {
				holder = i
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no replica took the lease to order within 60s")
		}
	}
	rs.procs[holder].Kill()
	killed := time.Now()
	if issued := rs.pebble.Issued(); issued != 0 {
		t.Fatalf("Pebble issued %d certificates before replica %d was killed: the order was not interrupted", issued, holder)
	}

	serials := <-done
	took := time.Since(killed)
	t.Logf("replica %d killed mid-order; a certificate was served %s later (lease TTL %s); Pebble took %d orders",
		holder, took.Round(100*time.Millisecond), leaseTTL, rs.pebble.Orders())
	if t.Failed() {
		t.FailNow()
	}
	// The lease, then one order: generous for an order, far short of autocert's own
	// retry of a failed order.
	if took > leaseTTL+50*time.Second {
		t.Errorf("the certificate came %s after the kill, want within the lease TTL (%s) and one order", took, leaseTTL)
	}
	if issued := rs.pebble.Issued(); issued != 1 {
		t.Errorf("Pebble issued %d certificates, want 1", issued)
	}
	if out := rs.pebble.Process.Output(); !strings.Contains(out, "Attempting to validate w/ HTTP: http://"+replicaDomain) {
		t.Errorf("Pebble's log shows no HTTP-01 validation:\n%s", out)
	}
	for i, addr := range rs.listens {
		if i == holder {
			continue
		}
		if s, err := rs.serial(addr); err != nil || s.Cmp(serials[0]) != 0 {
			t.Errorf("replica %d serves %v (%v), want %v", i, s, err, serials[0])
		}
	}
}
