//go:build integration

package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// The backend binary as an operator runs it: TLS modes, start-up checks and
// shutdown. What its API answers is specified in internal/api against a real
// Elasticsearch; this file is about the process around it.

// backendProcess is a running backend binary.
type backendProcess struct {
	proc   *testenv.Process
	listen string // host:port of the API
}

// startBackendProcess runs the backend against the shared Elasticsearch node with
// its own index prefix (unless env names one), and the variables in env.
func startBackendProcess(t *testing.T, env map[string]string) *backendProcess {
	t.Helper()
	esURL := testenv.ElasticsearchURL(t)
	full := map[string]string{"ELASTICSEARCH_URL": esURL, "LISTEN_ADDR": testenv.FreeAddr(t)}
	if env["ES_INDEX_PREFIX"] == "" {
		full["ES_INDEX_PREFIX"] = testenv.IndexPrefix(t, esURL)
	}
	for k, v := range env {
		full[k] = v
	}
	return &backendProcess{proc: testenv.StartProcess(t, binary(t, "backend"), full), listen: full["LISTEN_ADDR"]}
}

// httpsClient trusts roots and reaches serverName at addr: the test's stand-in
// for DNS. A new connection, so a new handshake, for every request.
func httpsClient(roots *x509.CertPool, serverName, addr string) *http.Client {
	return &http.Client{
		Timeout: 90 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: serverName},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func TestBackendObtainsACertificateOverACMEAndServesHTTPS(t *testing.T) {
	t.Parallel()
	const domain = "test.example"
	challengeAddr, listen := testenv.FreeAddr(t), testenv.FreeAddr(t)
	// Nothing listens on Pebble's TLS-ALPN-01 port, so the certificate can only come
	// through HTTP-01 on ACME_HTTP_ADDR, the way it comes through port 80 in production.
	pebble := testenv.StartPebble(t, testenv.PortOf(t, challengeAddr), testenv.PortOf(t, testenv.FreeAddr(t)))
	cacheDir := t.TempDir()
	startBackendProcess(t, map[string]string{
		"LISTEN_ADDR":        listen,
		"TLS_MODE":           "autocert",
		"TLS_DOMAINS":        domain,
		"TLS_CACHE_DIR":      cacheDir,
		"ACME_EMAIL":         "ops@" + domain,
		"ACME_DIRECTORY_URL": pebble.DirectoryURL,
		"ACME_CA_ROOTS":      pebble.CARootsFile,
		"ACME_HTTP_ADDR":     challengeAddr,
	})

	plain := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	redirect := func() (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+challengeAddr+"/getJsonStream?start_date=2023-03-09&end_date=2023-03-10", nil)
		req.Host = domain
		return plain.Do(req)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if res, err := redirect(); err == nil {
			res.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the backend's ACME_HTTP_ADDR %s did not answer within 30s", challengeAddr)
		}
	}

	// The first handshake for the domain has the backend obtain its certificate.
	client := httpsClient(pebble.IssuerRoots(t), domain, listen)
	res, err := client.Get("https://" + domain + ":" + fmt.Sprint(testenv.PortOf(t, listen)) + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS request: %v", err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz over HTTPS: %s", res.Status)
	}
	leaf := res.TLS.PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != domain || !strings.Contains(leaf.Issuer.CommonName, "Pebble") {
		t.Errorf("served certificate for %v issued by %q, want one for %s from Pebble", leaf.DNSNames, leaf.Issuer.CommonName, domain)
	}
	if res.TLS.Version < tls.VersionTLS12 {
		t.Errorf("negotiated TLS version %x, want at least 1.2", res.TLS.Version)
	}
	if hsts := res.Header.Get("Strict-Transport-Security"); hsts != "max-age=31536000" {
		t.Errorf("Strict-Transport-Security = %q, want max-age=31536000", hsts)
	}
	if out := pebble.Process.Output(); !strings.Contains(out, "Attempting to validate w/ HTTP: http://"+domain) {
		t.Errorf("Pebble's log does not show an http-01 validation:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, domain)); err != nil {
		t.Errorf("the certificate is not kept in TLS_CACHE_DIR for the next start: %v", err)
	}

	t.Run("plain HTTP for the domain is redirected to HTTPS", func(t *testing.T) {
		res, err := redirect()
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		want := "https://" + domain + ":" + fmt.Sprint(testenv.PortOf(t, listen)) + "/getJsonStream?start_date=2023-03-09&end_date=2023-03-10"
		if res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Location") != want {
			t.Errorf("got %s to %q, want 308 to %q", res.Status, res.Header.Get("Location"), want)
		}
		if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("the redirect lacks the security headers (X-Content-Type-Options %q)", got)
		}
	})
	t.Run("plain HTTP for another host is not redirected", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+challengeAddr+"/", nil)
		req.Host = "evil.example"
		res, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusMisdirectedRequest || res.Header.Get("Location") != "" {
			t.Errorf("got %s to %q, want 421 and no redirect", res.Status, res.Header.Get("Location"))
		}
	})
	t.Run("TLS 1.1 is refused", func(t *testing.T) {
		conn, err := tls.Dial("tcp", listen, &tls.Config{ServerName: domain, MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
			t.Error("a TLS 1.1 handshake succeeded")
		}
	})
}

// testCA issues certificates for 127.0.0.1, as another tool (certbot, an
// orchestrator's secret) would put them in files.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a PEM certificate and key for 127.0.0.1 with the given serial number.
func (ca *testCA) issue(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// replaceFile swaps in new content atomically, as renewal tools do.
func replaceFile(t *testing.T, path string, content []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestBackendInFileModeServesARenewedCertificateWithoutRestarting(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cert1, key1 := ca.issue(t, 1001)
	replaceFile(t, certFile, cert1)
	replaceFile(t, keyFile, key1)
	b := startBackendProcess(t, map[string]string{"TLS_MODE": "file", "TLS_CERT_FILE": certFile, "TLS_KEY_FILE": keyFile})
	client := httpsClient(ca.pool, "127.0.0.1", b.listen)

	servedSerial := func() int64 {
		t.Helper()
		var lastErr error
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			res, err := client.Get("https://" + b.listen + "/healthz")
			if err != nil {
				lastErr = err
				continue
			}
			res.Body.Close()
			return res.TLS.PeerCertificates[0].SerialNumber.Int64()
		}
		t.Fatalf("no HTTPS answer from %s within 30s: %v", b.listen, lastErr)
		return 0
	}
	if got := servedSerial(); got != 1001 {
		t.Fatalf("serving certificate %d, want 1001", got)
	}

	// The renewal tool writes the certificate a moment before its key. Meanwhile the
	// pair does not match, and the backend keeps the certificate it has.
	cert2, key2 := ca.issue(t, 1002)
	replaceFile(t, certFile, cert2)
	if got := servedSerial(); got != 1001 {
		t.Errorf("with only the new certificate written: serving %d, want still 1001", got)
	}
	replaceFile(t, keyFile, key2)
	if got := servedSerial(); got != 1002 {
		t.Errorf("after the renewal: serving %d, want 1002", got)
	}
	out := b.proc.Output()
	if !strings.Contains(out, "TLS certificate reloaded") || strings.Count(out, "do not load") != 1 {
		t.Errorf("want one warning about the mismatched pair and one reload in the log:\n%s", out)
	}

	t.Run("streams work over HTTP/2", func(t *testing.T) {
		h2 := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.pool}, ForceAttemptHTTP2: true}}
		res, err := h2.Get("https://" + b.listen + "/getStream?start_date=2023-03-09&end_date=2023-03-10")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || res.ProtoMajor != 2 || len(body) != 0 {
			t.Errorf("got %s over %s: %q, %v; want 200 over HTTP/2 with no documents", res.Status, res.Proto, body, err)
		}
	})
}

func TestBackendRefusesToStartWithABadConfigurationAndListsEveryProblem(t *testing.T) {
	t.Parallel()
	b := startBackendProcess(t, map[string]string{
		"TLS_MODE":             "autocert",
		"API_PAGE_SIZE":        "0",
		"CORS_ALLOWED_ORIGINS": "app.example.com",
		"API_KEYS":             "short-secret",
		"RATE_LIMIT_WINDOW":    "soon",
	})
	select {
	case <-b.proc.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("the backend did not exit within 30s")
	}
	if b.proc.ExitErr() == nil {
		t.Error("the backend exited with status 0")
	}
	out := b.proc.Output()
	for _, name := range []string{"TLS_DOMAINS", "API_PAGE_SIZE", "CORS_ALLOWED_ORIGINS", "API_KEYS", "RATE_LIMIT_WINDOW"} {
		if !strings.Contains(out, name) {
			t.Errorf("the output does not name %s:\n%s", name, out)
		}
	}
	if strings.Contains(out, "short-secret") {
		t.Errorf("the output echoes the API key:\n%s", out)
	}
}

func TestBackendLetsARunningStreamFinishWhenStopped(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	const n = 40000 // more than the sockets between the processes can buffer
	start := time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC)
	testenv.IndexDocuments(t, esURL, prefix, n, func(i int) pipeline.Item {
		ts := start.Add(time.Duration(i) * time.Second)
		id := fmt.Sprint(i)
		return pipeline.Item{ID: id, Timestamp: ts, Body: testenv.DocumentBody(id, ts, "cam-1")}
	})
	b := startBackendProcess(t, map[string]string{"ES_INDEX_PREFIX": prefix, "API_PAGE_SIZE": "100"})
	testenv.WaitHTTP(t, "http://"+b.listen+"/healthz", 30*time.Second)

	res, err := http.Get("http://" + b.listen + "/getStream?start_date=2023-03-09&end_date=2023-03-10")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	lines := bufio.NewReader(res.Body)
	if _, err := lines.ReadString('\n'); err != nil {
		t.Fatal(err)
	}

	b.proc.Terminate()
	// Shutting down, it takes no new connections...
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		conn, err := net.DialTimeout("tcp", b.listen, time.Second)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("the backend still accepts connections 10s after SIGTERM")
		}
	}
	select {
	case <-b.proc.Exited():
		t.Fatal("the backend exited with a stream still running")
	default:
	}
	// ...while the running stream goes on to its end.
	count := 1
	for {
		line, err := lines.ReadString('\n')
		if err == io.EOF && line == "" {
			break
		}
		if err != nil {
			t.Fatalf("after %d documents: %v", count, err)
		}
		if strings.HasPrefix(line, `{"error"`) {
			t.Fatalf("the stream ended with an error after %d documents: %s", count, line)
		}
		count++
	}
	if count != n {
		t.Errorf("the stream delivered %d documents, want %d", count, n)
	}
	select {
	case <-b.proc.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("the backend did not exit within 10s of its last stream ending")
	}
	if err := b.proc.ExitErr(); err != nil {
		t.Errorf("the backend exited with %v, want status 0", err)
	}
}

func TestBackendCutsStreamsStillRunningAtTheShutdownTimeout(t *testing.T) {
	t.Parallel()
	esURL := testenv.ElasticsearchURL(t)
	prefix := testenv.IndexPrefix(t, esURL)
	start := time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC)
	testenv.IndexDocuments(t, esURL, prefix, 40000, func(i int) pipeline.Item {
		ts := start.Add(time.Duration(i) * time.Second)
		return pipeline.Item{ID: fmt.Sprint(i), Timestamp: ts, Body: testenv.DocumentBody(fmt.Sprint(i), ts, "cam-1")}
	})
	b := startBackendProcess(t, map[string]string{"ES_INDEX_PREFIX": prefix, "API_PAGE_SIZE": "100", "SHUTDOWN_TIMEOUT": "1s"})
	testenv.WaitHTTP(t, "http://"+b.listen+"/healthz", 30*time.Second)
	res, err := http.Get("http://" + b.listen + "/getJsonStream?start_date=2023-03-09&end_date=2023-03-10")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	// The client reads nothing more: a stream that cannot finish by itself.
	stopped := time.Now()
	b.proc.Terminate()
	select {
	case <-b.proc.Exited():
	case <-time.After(15 * time.Second):
		t.Fatal("the backend did not exit within 15s with SHUTDOWN_TIMEOUT=1s")
	}
	if took := time.Since(stopped); took < time.Second {
		t.Errorf("the backend exited after %s, before SHUTDOWN_TIMEOUT", took)
	}
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Error("the cut stream read as complete")
	}
	if out := b.proc.Output(); !strings.Contains(out, "requests still running at the shutdown timeout were cut") {
		t.Errorf("the cut was not logged:\n%s", out)
	}
}
