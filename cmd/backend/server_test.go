package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/api"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// endlessStore serves the same page of documents until the export's context
// ends or the client cannot take more, and tells when each export returned.
type endlessStore struct{ ended chan time.Time }

func (e *endlessStore) Export(ctx context.Context, _ store.Range, fn func(store.Page) error) error {
	defer func() { e.ended <- time.Now() }()
	var p store.Page
	for i := range 256 {
		p = append(p, fmt.Appendf(nil, `{"id":"%06d","pad":"%s"}`, i, strings.Repeat("x", 1000)))
	}
	for ctx.Err() == nil {
		if err := fn(p); err != nil {
			return err
		}
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
	cfg, err := config.LoadBackend(func(name string) string {
		return map[string]string{"STREAM_STALL_TIMEOUT": stall.String(), "API_MAX_STREAMS": "1"}[name]
	})
	if err != nil {
		t.Fatal(err)
	}
	st := &endlessStore{ended: make(chan time.Time, 1)}
	h, err := api.NewServer(slog.New(slog.DiscardHandler), cfg, st, api.NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	ca := testenv.NewCA(t, "stall test")
	cert := ca.Issue("localhost", "127.0.0.1")
	srv := newHTTPServer(h, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}, slog.New(slog.DiscardHandler), cfg.StallTimeout)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { srv.ServeTLS(ln, "", "") })
	t.Cleanup(func() { srv.Close(); wg.Wait() })

	pause := make(chan struct{})
	var conns []net.Conn
	var mu sync.Mutex
	client := &http.Client{Transport: &http.Transport{
		ForceAttemptHTTP2: true,
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool()},
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

	url := "https://" + ln.Addr().String() + "/getStream?start_date=2023-03-09&end_date=2023-03-10"
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
	stalled := time.Now()
	select {
	case ended := <-st.ended:
		// The client's TCP and HTTP/2 buffers fill first: allow for that.
		if took := ended.Sub(stalled); took > stall+3*time.Second {
			t.Errorf("the stalled stream ended %s after the client stopped reading, want about %s", took.Round(time.Millisecond), stall)
		}
	case <-time.After(stall + 15*time.Second):
		t.Fatalf("the stream still runs %s after its client stopped reading (STREAM_STALL_TIMEOUT=%s)", stall+15*time.Second, stall)
	}
}
