// Package testenv starts and finds the real services that integration tests run
// against: a NATS server with JetStream (in-process, or a process of its own), and
// the Elasticsearch node that `make test` (or `make services`) started.
package testenv

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
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
	bin, err := BuildNATSServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	n := StartNATSServer(t, bin, args...)
	return n.URL(), n.proc
}

// BuildNATSServer compiles nats-server, the version in go.mod, into dir and
// returns its path. It is built without the race detector whatever the tests
// run with: the server is not the code under test, and instrumented it takes
// several times the processor time.
func BuildNATSServer(dir string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nats-server")
	build := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build nats-server: %w\n%s", err, out)
	}
	return bin, nil
}

// NATSServer is a nats-server with JetStream running as a process of its own, as
// in production, so that its work is neither slowed by the race detector nor
// counted against the test binary's processors.
type NATSServer struct {
	t     testing.TB
	bin   string
	addr  string
	store string
	args  []string
	proc  *Process
}

// StartNATSServer runs bin (see BuildNATSServer) with JetStream on a loopback
// port of its choosing, with its store in a temporary directory, and waits until
// it is ready. args are added to its command line. It is stopped when the test
// ends.
func StartNATSServer(t testing.TB, bin string, args ...string) *NATSServer {
	t.Helper()
	n := &NATSServer{t: t, bin: bin, store: t.TempDir(), args: args}
	// The server picks its port itself: one found free beforehand could be taken
	// by another test's server before this one binds it.
	if err := n.start("-1"); err != nil {
		t.Fatal(err)
	}
	return n
}

// listening is the line in which nats-server names the address it took.
var listening = regexp.MustCompile(`Listening for client connections on (\S+)`)

// start runs the server on port and waits until it says it is ready.
func (n *NATSServer) start(port string) error {
	n.proc = StartProcess(n.t, n.bin, nil, append([]string{"-js", "-a", "127.0.0.1", "-p", port, "-sd", n.store}, n.args...)...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := n.proc.Output()
		if m := listening.FindStringSubmatch(out); m != nil && strings.Contains(out, "Server is ready") {
			n.addr = m[1]
			return nil
		}
		select {
		case <-n.proc.done:
			return fmt.Errorf("nats-server exited before it was ready: %v\n%s", n.proc.err, out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server was not ready within 10s:\n%s", out)
		}
	}
}

// URL is the client URL of the server.
func (n *NATSServer) URL() string { return "nats://" + n.addr }

// Restart stops the server gracefully and starts it again on the same port and
// store, as an operator's restart would.
func (n *NATSServer) Restart() {
	n.t.Helper()
	if err := n.proc.Stop(); err != nil {
		n.t.Fatalf("stop nats-server: %v\n%s", err, n.proc.Output())
	}
	_, port, _ := net.SplitHostPort(n.addr)
	if err := n.start(port); err != nil {
		n.t.Fatal(err)
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
