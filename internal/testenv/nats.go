// Package testenv starts and finds the real services that integration tests run
// against: an in-process NATS server with JetStream, and the Elasticsearch node that
// `make test` (or `make services`) started.
package testenv

import (
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS is a real nats-server with JetStream, running inside the test process.
type NATS struct {
	t    testing.TB
	opts *server.Options
	srv  *server.Server
}

// StartNATS starts a JetStream-enabled server on a free loopback port, with its store
// in a temporary directory. It is shut down when the test ends.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	return StartNATSWith(t, func(*server.Options) {})
}

func (n *NATS) start() {
	n.t.Helper()
	srv, err := server.NewServer(n.opts)
	if err != nil {
		n.t.Fatalf("nats-server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		n.t.Fatalf("nats-server did not become ready within 10s")
	}
	n.srv = srv
}

// URL is the client URL of the server.
func (n *NATS) URL() string { return n.srv.ClientURL() }

// Stop shuts the server down; its JetStream store stays on disk for Restart.
func (n *NATS) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}

// Restart stops the server and starts it again on the same port and store.
func (n *NATS) Restart() {
	n.t.Helper()
	n.Stop()
	n.start()
}

// StartNATSProcess runs nats-server, built from the version in go.mod, as its own
// process with JetStream, as in production, and returns its URL. Benchmarks use it
// so the server's work is not mixed into the benchmark's own process.
func StartNATSProcess(t testing.TB) string {
	t.Helper()
	url, _ := StartNATSServerProcess(t)
	return url
}

// StartNATSServerProcess is StartNATSProcess, also returning the process, for
// benchmarks that measure the server's own processor time. args are added to
// nats-server's command line (such as --profile PORT).
func StartNATSServerProcess(t testing.TB, args ...string) (string, *Process) {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "nats-server")
	build := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	addr := FreeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	proc := StartProcess(t, bin, nil, append([]string{"-js", "-a", host, "-p", port, "-sd", t.TempDir()}, args...)...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "nats://" + addr, proc
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not listen on %s within 10s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// JetStream connects a test client to the NATS server at url, reconnecting quickly
// and forever (so it outlives a server restart), and closes it when the test ends.
func JetStream(t testing.TB, url string, opts ...jetstream.JetStreamOpt) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to nats %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}
