package api

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/prometheus/client_golang/prometheus"
)

// endlessExporter serves pages of pageBytes until its context ends or its
// callback fails, and records when each export returned.
type endlessExporter struct {
	pageBytes int
	pages     int // 0: without end
	ended     chan time.Time
}

func (e *endlessExporter) Export(ctx context.Context, _ pipeline.Range, fn func(pipeline.Page) error) error {
	defer func() { e.ended <- time.Now() }()
	// Documents of about 1 KB, so a page is many small writes.
	filler := strings.Repeat("x", 1000)
	var p pipeline.Page
	for i := 0; len(p.Docs)*1024 < e.pageBytes; i++ {
		p.Docs = append(p.Docs, fmt.Appendf(nil, `{"id":"%06d","pad":"%s"}`, i, filler))
	}
	for i := 0; e.pages == 0 || i < e.pages; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(p); err != nil {
			return err
		}
	}
	return nil
}

func (e *endlessExporter) Check(context.Context) error { return nil }

// TestASlowButSteadyReaderGetsTheWholeRange: only a client that takes nothing for
// STREAM_STALL_TIMEOUT is cut, however long one page takes it to read.
func TestASlowButSteadyReaderGetsTheWholeRange(t *testing.T) {
	const stall = time.Second
	const pageBytes, pages = 2 << 20, 3
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(t *testing.T) {
			st := &endlessExporter{pageBytes: pageBytes, pages: pages, ended: make(chan time.Time, 1)}
			srv := httptest.NewUnstartedServer(mustServer(t, st, Config{StallTimeout: stall}))
			srv.EnableHTTP2 = h2
			srv.Listener = &smallBufferListener{srv.Listener}
			srv.StartTLS()
			t.Cleanup(srv.Close)
			client := srv.Client()
			tr := client.Transport.(*http.Transport)
			tr.DialContext = smallReadBuffer
			tr.DisableCompression = true // gzip would shrink the pages to nothing
			if !h2 {
				tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
			}
			res, err := client.Get(srv.URL + "/getStream" + someRange)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			// About 1.5 MB/s: one page takes two stall timeouts to read, but no
			// 100ms passes without taking something.
			var total int
			buf := make([]byte, 16<<10)
			for {
				n, err := io.ReadFull(res.Body, buf)
				total += n
				if err != nil {
					if err != io.EOF && err != io.ErrUnexpectedEOF {
						t.Fatalf("cut after %d bytes: %v", total, err)
					}
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if want := pages * len(st.sample()); total < want {
				t.Errorf("got %d bytes, want at least %d", total, want)
			}
		})
	}
}

// sample is roughly what one page amounts to on the wire.
func (e *endlessExporter) sample() []byte { return make([]byte, e.pageBytes*9/10) }

func mustServer(t *testing.T, st Exporter, cfg Config) http.Handler {
	t.Helper()
	h, err := NewServer(slog.New(slog.DiscardHandler), cfg, st, nil, NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// The kernel's socket buffers on both ends are kept small in these tests, so that
// what the client reads, not what loopback can hold, paces the server.

func smallReadBuffer(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		c.(*net.TCPConn).SetReadBuffer(64 << 10)
	}
	return c, err
}

type smallBufferListener struct{ net.Listener }

func (l *smallBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(64 << 10)
	}
	return c, err
}
