package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/admin"
	"github.com/annotated-data/pipeline/internal/api"
	"github.com/annotated-data/pipeline/internal/certs"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// endlessStore serves the same page of documents until the export's context
// ends or the client cannot take more, and tells when each export returned and
// when the stream last took a page.
type endlessStore struct {
	ended chan time.Time
	taken atomic.Int64 // unix nanoseconds
}

func (*endlessStore) FieldCaps(context.Context, []string) (map[string]map[string][]string, error) {
	return map[string]map[string][]string{}, nil
}

func (*endlessStore) Counts(context.Context, pipeline.CountsRequest) (pipeline.Counts, error) {
	return pipeline.Counts{}, nil
}

func (e *endlessStore) Export(ctx context.Context, _ pipeline.Range, fn func(pipeline.Page) error) error {
	defer func() { e.ended <- time.Now() }()
	var p pipeline.Page
	for i := range 256 {
		p.Docs = append(p.Docs, fmt.Appendf(nil, `{"id":"%06d","pad":"%s"}`, i, strings.Repeat("x", 1000)))
	}
	for ctx.Err() == nil {
		if err := fn(p); err != nil {
			return err
		}
		e.taken.Store(time.Now().UnixNano())
	}
	return ctx.Err()
}

func (e *endlessStore) Check(context.Context) error { return nil }

// pausableConn stops reading (as a client whose process is stopped, or that reads
// nothing at all) once pause is closed.
type pausableConn struct {
	net.Conn
	pause chan struct{}
}

func (c *pausableConn) Read(p []byte) (int, error) {
	select {
	case <-c.pause:
		<-make(chan struct{}) // never again; Close ends the test's connection
	default:
	}
	return c.Conn.Read(p)
}

// TestAClientThatStopsReadingAnHTTP2StreamLosesItWithinTheStallTimeout: over TLS
// clients negotiate HTTP/2, where a stream's write deadline cannot end a write
// stuck behind a full TCP window. The stalled stream (and its API_MAX_STREAMS
// slot) must still be freed within STREAM_STALL_TIMEOUT.
func TestAClientThatStopsReadingAnHTTP2StreamLosesItWithinTheStallTimeout(t *testing.T) {
	const stall = time.Second
	st := &endlessStore{ended: make(chan time.Time, 1)}
	addr, ca := startTLSBackend(t, st, map[string]string{"STREAM_STALL_TIMEOUT": stall.String(), "API_MAX_STREAMS": "1"})
	pause := make(chan struct{})
	var conns []net.Conn
	var mu sync.Mutex
	client := &http.Client{Transport: &http.Transport{
		ForceAttemptHTTP2:  true,
		DisableCompression: true, // gzip would shrink the documents to nothing: slow to fill the buffers
		TLSClientConfig:    &tls.Config{RootCAs: ca},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			c.(*net.TCPConn).SetReadBuffer(64 << 10)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			return &pausableConn{Conn: c, pause: pause}, nil
		},
	}}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	url := "https://" + addr + "/getStream?start_date=2023-03-09&end_date=2023-03-10"
	res, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Fatalf("the client speaks %s, want HTTP/2", res.Proto)
	}
	if _, err := io.ReadFull(res.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	close(pause)
	select {
	case ended := <-st.ended:
		// The stall is counted from the stream's last progress, once the
		// client's TCP and HTTP/2 buffers are full; how long filling them takes
		// depends on the machine's load, so it is not part of the bound. The
		// last page taken is at most one page's write before that progress.
		if took := ended.Sub(time.Unix(0, st.taken.Load())); took > stall+3*time.Second {
			t.Errorf("the stalled stream ended %s after it last took a page, want about %s", took.Round(time.Millisecond), stall)
		}
	case <-time.After(stall + 15*time.Second):
		t.Fatalf("the stream still runs %s after its client stopped reading (STREAM_STALL_TIMEOUT=%s)", stall+15*time.Second, stall)
	}
}

// startTLSBackend serves the API over TLS (file mode) the way run does, in front
// of st, and returns its address and the pool that trusts it.
func startTLSBackend(t *testing.T, st api.Exporter, vars map[string]string) (string, *x509.CertPool) {
	t.Helper()
	ca := testenv.NewCA(t, "backend test")
	certFile, keyFile := ca.WriteKeyPair(ca.Issue("localhost", "127.0.0.1"))
	env := map[string]string{"TLS_MODE": "file", "TLS_CERT_FILE": certFile, "TLS_KEY_FILE": keyFile}
	maps.Copy(env, vars)
	cfg, err := config.LoadBackend(func(name string) string { return env[name] })
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	h, err := api.NewServer(log, cfg.API, st, nil, api.NewMetrics(admin.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	tlsSetup, err := certs.New(cfg.TLS, cfg.ListenAddr, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(h, tlsSetup.TLSConfig, log, cfg.StallTimeout)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { srv.ServeTLS(ln, "", "") })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return ln.Addr().String(), ca.Pool()
}

// TestTooLargeHeadersAreAnsweredWithTheSecurityHeaders: net/http's own 431
// carries none of the headers every other response has, HSTS included.
func TestTooLargeHeadersAreAnsweredWithTheSecurityHeaders(t *testing.T) {
	addr, ca := startTLSBackend(t, &endlessStore{ended: make(chan time.Time, 1)}, nil)
	for _, proto := range []string{"HTTP/1.1", "HTTP/2"} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca}, ForceAttemptHTTP2: proto == "HTTP/2"}
		if proto == "HTTP/1.1" {
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/healthz", nil)
		req.Header.Set("X-Padding", strings.Repeat("x", 70<<10))
		res, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%s: %d %s, want 431", proto, res.StatusCode, body)
		}
		for _, h := range []string{"Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy", "Referrer-Policy"} {
			if res.Header.Get(h) == "" {
				t.Errorf("%s: the 431 response has no %s", proto, h)
			}
		}
		if !strings.Contains(string(body), "headers_too_large") {
			t.Errorf("%s: the 431 body %q is not the API's JSON error", proto, body)
		}
	}
}
