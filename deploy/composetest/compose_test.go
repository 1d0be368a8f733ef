//go:build compose

package composetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/publish"
	"github.com/annotated-data/pipeline/internal/sample"
)

// A project of its own, so that the test never touches an operator's volumes
// (docker-compose.yml names its project "annotations").
const project = "annotations-composetest"

const (
	adminURL   = "http://127.0.0.1:8081"
	pebbleURL  = "https://127.0.0.1:15000"
	domain     = "api.pipeline.test" // deploy/composetest/autocert.yml
	demoFrames = 120
	backlog    = 20000
)

// plain is docker-compose.yml's published ports, without TLS or credentials.
var plain = endpoints{
	nats:    "nats://127.0.0.1:4222",
	es:      "http://127.0.0.1:9200",
	backend: "http://localhost:5000",
	client:  http.DefaultClient,
}

var (
	base     = []string{"docker-compose.yml"}
	autocert = []string{"docker-compose.yml", "deploy/composetest/autocert.yml"}
	// Every file and volume of the project, for cleaning up.
	everything = []string{"docker-compose.yml", "deploy/composetest/autocert.yml", "docker-compose.prod.yml", "--env-file", "deploy/secrets.env.example"}
	// The frames' times: demoFrames from the README's example range, then the
	// backlog after it (one frame per camera every 10 s, four cameras).
	start     = time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC)
	demoRange = [2]string{"2023-03-09T19:40:00", "2023-03-09T19:45:00"}
	allRange  = [2]string{"2023-03-09T00:00:00", "2023-03-11T00:00:00"}
)

// One test, in the order an operator lives it: each step starts from the state
// the previous one left.
func TestDockerComposeUpForReal(t *testing.T) {
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("no Docker engine answers (docker info: %v): %s\nStart dockerd (as root: dockerd &), or run .ci/run, which does.", err, out)
	}
	if out, err := exec.Command("docker", "compose", "version").CombinedOutput(); err != nil {
		t.Fatalf("docker compose is not installed (%v): %s\nSee .ci/run for how CI installs it.", err, out)
	}
	// Start from nothing, and leave nothing: the volumes of every file this test
	// uses (a certs volume left over would make the secured setup skip its work).
	compose(t, everything, "down", "--volumes", "--remove-orphans")
	if os.Getenv("COMPOSE_TEST_KEEP") == "" {
		t.Cleanup(func() { compose(t, everything, "down", "--volumes", "--remove-orphans") })
	}
	gen := &sample.Generator{Start: start, Interval: 10 * time.Second, Cameras: 4}
	// Each step starts from the state the one before left: after a failure, stop.
	ok := true

	began := time.Now()
	mustCompose(t, base, "build")
	built := time.Now()
	mustCompose(t, base, "up", "-d", "--build", "--wait")
	t.Logf("FIGURE build %s, up to healthy %s", built.Sub(began).Round(time.Second), time.Since(built).Round(time.Second))

	ok = ok && t.Run("every service turns healthy", func(t *testing.T) { allHealthy(t, base) })
	ok = ok && t.Run("every container runs as non-root", func(t *testing.T) { nonRoot(t, base) })

	var demo []publish.Message
	ok = ok && t.Run("demo frames published into nats come back complete from the backend", func(t *testing.T) {
		demo = frames(gen, demoFrames)
		plain.publish(t, demo)
		plain.waitForCount(t, demoFrames)
		docs := plain.getJSONStream(t, demoRange, "")
		if len(docs) != demoFrames {
			t.Fatalf("getJsonStream returned %d documents, want %d", len(docs), demoFrames)
		}
		want := map[string][]byte{}
		for _, m := range demo {
			want[m.ID] = m.Data
		}
		for _, d := range docs {
			id := docID(t, d)
			sent, ok := want[id]
			if !ok {
				t.Fatalf("document %s was not published (or came back twice)", id)
			}
			delete(want, id)
			sameFrame(t, id, sent, d)
		}
	})

	var all []publish.Message
	ok = ok && t.Run("restarting the webserver in the middle of a backlog loses and duplicates nothing", func(t *testing.T) {
		msgs := frames(gen, backlog)
		all = append(slices.Clone(demo), msgs...)
		plain.publish(t, msgs)
		// Restart once a tenth of the backlog is indexed: batches are in flight,
		// most of the backlog waits in the stream.
		var before int
		deadline := time.Now().Add(2 * time.Minute)
		for before = plain.esCount(t); before < demoFrames+backlog/10; before = plain.esCount(t) {
			if time.Now().After(deadline) {
				t.Fatalf("indexing of the backlog did not begin within 2 minutes (%d documents)", before)
			}
			time.Sleep(50 * time.Millisecond)
		}
		mustCompose(t, base, "restart", "webserver")
		if before >= len(all) {
			t.Fatalf("the backlog was indexed (%d documents) before the restart was issued: nothing proven", before)
		}
		t.Logf("restarted the webserver with %d of %d documents indexed", before-demoFrames, backlog)
		plain.waitForCount(t, len(all))
		plain.drained(t)
		plain.sameIDs(t, allRange, all)
	})

	ok = ok && t.Run("down and up keep the documents and the durable consumer's position", func(t *testing.T) {
		before := plain.consumer(t)
		mustCompose(t, base, "down")
		mustCompose(t, base, "up", "-d", "--wait")
		after := plain.consumer(t)
		if after.Delivered.Stream != before.Delivered.Stream || after.AckFloor.Stream != before.AckFloor.Stream {
			t.Errorf("consumer position moved across down/up: delivered %d → %d, ack floor %d → %d",
				before.Delivered.Stream, after.Delivered.Stream, before.AckFloor.Stream, after.AckFloor.Stream)
		}
		// Give a wrongly redelivered backlog time to show, then count.
		time.Sleep(5 * time.Second)
		if n := metric(t, "webserver_messages_received_total"); n != 0 {
			t.Errorf("the webserver received %v messages after up with nothing new published: the position was lost", n)
		}
		if n := plain.esCount(t); n != len(all) {
			t.Errorf("%d documents after down/up, want %d", n, len(all))
		}
		more := frames(gen, 8)
		all = append(all, more...)
		plain.publish(t, more)
		plain.waitForCount(t, len(all))
		plain.drained(t)
		if n := metric(t, "webserver_documents_indexed_total"); n != float64(len(more)) {
			t.Errorf("the webserver indexed %v documents after up, want exactly the %d new ones", n, len(more))
		}
		plain.sameIDs(t, allRange, all)
	})

	ok = ok && t.Run("stop ends every service within its grace period with exit code 0", func(t *testing.T) {
		ids := containers(t, base, false)
		began := time.Now()
		mustCompose(t, base, "stop")
		took := time.Since(began)
		for _, c := range inspect(t, ids) {
			if c.State.Running || c.State.ExitCode != 0 {
				t.Errorf("%s: running=%v exit code %d, want stopped with 0", c.Name, c.State.Running, c.State.ExitCode)
			}
			if stopped := c.State.FinishedAt.Sub(began); stopped > 10*time.Second {
				t.Errorf("%s stopped %s after the SIGTERM, beyond the 10 s grace period (killed)", c.Name, stopped.Round(time.Millisecond))
			}
		}
		t.Logf("FIGURE stop took %s", took.Round(time.Millisecond))
	})

	ok = ok && t.Run("autocert gets a certificate from Pebble over HTTP-01 and keeps it in its volume", func(t *testing.T) {
		mustCompose(t, autocert, "up", "-d", "--build", "--wait")
		allHealthy(t, autocert)
		nonRoot(t, autocert)
		roots := pebbleRoots(t)
		first := serveCertificate(t, roots)
		logs := mustCompose(t, autocert, "logs", "--no-log-prefix", "pebble")
		if !strings.Contains(logs, "validate w/ HTTP: http://"+domain+":80/.well-known/acme-challenge/") || !strings.Contains(logs, "set VALID by completed challenge") {
			t.Errorf("Pebble's log shows no successful HTTP-01 validation of %s:\n%s", domain, logs)
		}
		// The certificate and the account key are files of the non-root user in
		// the cache volume, and a restarted backend serves the same certificate
		// instead of asking the CA again.
		ls, err := exec.Command("docker", "run", "--rm", "--entrypoint", "ls", "-v", project+"_autocert-cache:/cache",
			"nats:2.15.2-alpine", "-ln", "/cache").CombinedOutput()
		if err != nil || !strings.Contains(string(ls), domain) || !strings.Contains(string(ls), "65532") {
			t.Errorf("the autocert cache volume does not hold the non-root user's certificate for %s (%v):\n%s", domain, err, ls)
		}
		mustCompose(t, autocert, "restart", "backend")
		waitHealthy(t, autocert, "backend")
		if again := serveCertificate(t, roots); again.SerialNumber.Cmp(first.SerialNumber) != 0 {
			t.Errorf("after a restart the backend serves certificate %x, before it served %x: the cache was not kept", again.SerialNumber, first.SerialNumber)
		}
	})

	securedVariant(t, ok)
}

// The secured variant's secrets (deploy/secrets.env.example's variables).
const (
	elasticPassword   = "elastic-secret"
	esWebserverPass   = "webserver-es-secret"
	esBackendPassword = "backend-es-secret"
	publisherPassword = "publisher-secret"
	natsWebserverPass = "webserver-secret"
)

// securedVariant runs docker-compose.prod.yml from nothing, as an operator
// following docs/operating.md would, and checks it from outside: everything over
// TLS and with a password, the data through, and each binary's Elasticsearch user
// refused what its role does not grant. ok says whether the steps before passed.
func securedVariant(t *testing.T, ok bool) {
	env := t.TempDir() + "/secrets.env"
	secrets := "ELASTIC_PASSWORD=" + elasticPassword + "\nES_WEBSERVER_PASSWORD=" + esWebserverPass +
		"\nES_BACKEND_PASSWORD=" + esBackendPassword + "\nES_OPERATOR_PASSWORD=operator-es-secret\n" +
		"NATS_WEBSERVER_PASSWORD=" + natsWebserverPass + "\nNATS_PUBLISHER_PASSWORD=" + publisherPassword +
		"\nNATS_BACKEND_PASSWORD=backend-secret\n"
	if err := os.WriteFile(env, []byte(secrets), 0o600); err != nil {
		t.Fatal(err)
	}
	prod := []string{"docker-compose.yml", "docker-compose.prod.yml", "--env-file", env}
	var secured endpoints
	var tlsConfig *tls.Config

	ok = ok && t.Run("the secured variant turns healthy from nothing: certificates, then users, then the binaries", func(t *testing.T) {
		// New volumes: the setup makes the CA and certificates, setup-security the
		// users, from nothing.
		mustCompose(t, everything, "down", "--volumes", "--remove-orphans")
		began := time.Now()
		mustCompose(t, prod, "up", "-d", "--build", "--wait")
		t.Logf("FIGURE secured variant up to healthy %s", time.Since(began).Round(time.Second))
		allHealthy(t, prod)
		nonRoot(t, prod)
		done := map[string]bool{}
		for _, e := range ps(t, prod) {
			done[e.Service] = e.State == "exited" && e.ExitCode == 0
		}
		for _, oneShot := range []string{"setup", "setup-security"} {
			if !done[oneShot] {
				t.Errorf("%s did not run to completion", oneShot)
			}
		}
		logs := mustCompose(t, prod, "logs", "--no-log-prefix", "setup-security")
		for _, user := range []string{"backend", "operator", "webserver"} {
			if !strings.Contains(logs, "user "+user+" created") {
				t.Errorf("setup-security did not create the user %s of deploy/elasticsearch-security.json:\n%s", user, logs)
			}
		}

		ca := x509.NewCertPool()
		if pem := mustCompose(t, prod, "exec", "-T", "elasticsearch", "cat", "config/certs/ca/ca.crt"); !ca.AppendCertsFromPEM([]byte(pem)) {
			t.Fatalf("the setup's CA certificate is not PEM:\n%s", pem)
		}
		tlsConfig = &tls.Config{RootCAs: ca}
		secured = endpoints{
			nats:     "tls://127.0.0.1:4222",
			natsOpts: []nats.Option{nats.Secure(tlsConfig), nats.UserInfo("publisher", publisherPassword)},
			es:       "https://127.0.0.1:9200",
			esUser:   "elastic",
			esPass:   elasticPassword,
			backend:  "https://localhost:5000",
			client:   &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: tlsConfig}},
		}
	})

	ok = ok && t.Run("frames published over TLS as the publisher come back from the backend's HTTPS API", func(t *testing.T) {
		// Recent frames: the secured webserver keeps the default window of event
		// times (TIMESTAMP_MAX_PAST), which the demo frames of 2023 are outside.
		start := time.Now().UTC().Add(-time.Hour).Truncate(time.Minute)
		gen := &sample.Generator{Start: start, Interval: 10 * time.Second, Cameras: 4}
		demo := frames(gen, demoFrames)
		secured.publish(t, demo)
		secured.waitForCount(t, demoFrames)
		const layout = "2006-01-02T15:04:05"
		secured.sameIDs(t, [2]string{start.Format(layout), start.Add(time.Hour).Format(layout)}, demo)
	})

	ok = ok && t.Run("no way in without TLS or with another's password, and the publisher only publishes frames", func(t *testing.T) {
		if nc, err := nats.Connect("nats://127.0.0.1:4222", nats.UserInfo("publisher", publisherPassword)); err == nil {
			nc.Close()
			t.Error("NATS let the publisher in without TLS")
		}
		if nc, err := nats.Connect(secured.nats, nats.Secure(tlsConfig), nats.UserInfo("publisher", natsWebserverPass)); err == nil {
			nc.Close()
			t.Error("NATS let the publisher in with the webserver's password")
		}
		denied := make(chan error, 1)
		opts := append(slices.Clone(secured.natsOpts), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
		nc, err := nats.Connect(secured.nats, opts...)
		if err != nil {
			t.Fatalf("the publisher cannot connect over TLS with its password: %v", err)
		}
		defer nc.Close()
		if err := nc.Publish("dlq.annotations.cam-01", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		nc.Flush()
		select {
		case err := <-denied:
			if !strings.Contains(err.Error(), "dlq.annotations.cam-01") {
				t.Errorf("the publisher's violation: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("the publisher published on dlq.annotations.cam-01 and NATS allowed it")
		}
		if res, err := http.Get("http://127.0.0.1:9200/_cluster/health"); err == nil {
			res.Body.Close()
			t.Errorf("Elasticsearch answered plain HTTP: %s", res.Status)
		}
		if status, body := secured.esDo(t, "", "", "GET", "/_cluster/health", ""); status != http.StatusUnauthorized || !strings.Contains(body, "missing authentication credentials") {
			t.Errorf("Elasticsearch without credentials: %d %s", status, body)
		}
	})

	ok = ok && t.Run("each user is refused what its role does not grant", func(t *testing.T) {
		// The backend's password works, so the refusals below are about privileges.
		if status, body := secured.esDo(t, "backend", esBackendPassword, "GET", "/annotations-*/_count", ""); status != http.StatusOK || !strings.Contains(body, fmt.Sprintf(`"count":%d`, demoFrames)) {
			t.Fatalf("the backend's user counts: %d %s", status, body)
		}
		if status, _ := secured.esDo(t, "elastic", elasticPassword, "PUT", "/not-annotations", ""); status != http.StatusOK {
			t.Fatalf("the elastic user cannot create the index not-annotations: %d", status)
		}
		refusals := []struct {
			what, user, password, method, path, body, action string
		}{
			{"the backend writes documents", "backend", esBackendPassword, "POST", "/_bulk",
				`{"create":{"_index":"annotations-2023.03.09"}}` + "\n" + `{"camera_id":"intruder"}` + "\n", "indices:data/write/bulk"},
			{"the webserver deletes an index it did not create", "webserver", esWebserverPass, "DELETE", "/not-annotations", "", "indices:admin/delete"},
			{"the webserver creates a user", "webserver", esWebserverPass, "PUT", "/_security/user/intruder",
				`{"password":"intruder-secret","roles":["superuser"]}`, "cluster:admin/xpack/security/user/put"},
		}
		for _, r := range refusals {
			status, body := secured.esDo(t, r.user, r.password, r.method, r.path, r.body)
			if status != http.StatusForbidden || !strings.Contains(body, "action ["+r.action+"] is unauthorized for user ["+r.user+"]") {
				t.Errorf("%s: %s %s answered %d, want 403 naming %s:\n%s", r.what, r.method, r.path, status, r.action, body)
			}
		}
		if n := secured.esCount(t); n != demoFrames {
			t.Errorf("%d documents after the refusals, want %d", n, demoFrames)
		}
	})

	_ = ok && t.Run("setup-security run again changes nothing and succeeds", func(t *testing.T) {
		out := mustCompose(t, prod, "run", "--rm", "--no-deps", "-T", "setup-security")
		if !strings.Contains(out, "user webserver updated") {
			t.Errorf("setup-security run again:\n%s", out)
		}
		if status, body := secured.esDo(t, "webserver", esWebserverPass, "GET", "/_security/_authenticate", ""); status != http.StatusOK {
			t.Errorf("the webserver's password after setup-security ran again: %d %s", status, body)
		}
	})
}

// compose runs docker compose on files (paths from the repository's root, and
// other global flags) with args, and returns its combined output.
func compose(t *testing.T, files []string, args ...string) (string, error) {
	t.Helper()
	return composeWithin(t, 30*time.Minute, files, args...)
}

// composeWithin is compose, killed after d.
func composeWithin(t *testing.T, d time.Duration, files []string, args ...string) (string, error) {
	t.Helper()
	full := []string{"compose", "-p", project}
	for i := 0; i < len(files); i++ {
		if strings.HasPrefix(files[i], "--") {
			full = append(full, files[i], files[i+1])
			i++
			continue
		}
		full = append(full, "-f", files[i])
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append(full, args...)...)
	cmd.Dir = "../.."
	// Modest heap: the machine is shared.
	cmd.Env = append(os.Environ(), "ES_HEAP=512m")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustCompose(t *testing.T, files []string, args ...string) string {
	t.Helper()
	out, err := compose(t, files, args...)
	if err != nil {
		t.Fatalf("docker compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

type psEntry struct {
	ID, Service, State, Health string
	ExitCode                   int
}

func ps(t *testing.T, files []string) []psEntry {
	t.Helper()
	out := mustCompose(t, files, "ps", "--all", "--format", "json")
	var entries []psEntry
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e psEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("docker compose ps: %v: %s", err, line)
		}
		entries = append(entries, e)
	}
	return entries
}

// allHealthy checks that every long-running service is healthy and every
// one-shot one exited 0.
func allHealthy(t *testing.T, files []string) {
	t.Helper()
	for _, e := range ps(t, files) {
		switch {
		case e.State == "exited" && e.ExitCode == 0 && !slices.Contains([]string{"nats", "elasticsearch", "webserver", "backend", "pebble"}, e.Service):
		case e.State == "running" && e.Health == "healthy":
		default:
			t.Errorf("service %s: state %s, health %q, exit code %d", e.Service, e.State, e.Health, e.ExitCode)
		}
	}
}

func waitHealthy(t *testing.T, files []string, service string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		for _, e := range ps(t, files) {
			if e.Service == service && e.Health == "healthy" {
				return
			}
		}
	}
	t.Fatalf("%s did not turn healthy within 2 minutes", service)
}

// containers returns the ids of the project's containers that run (all: also those
// that exited).
func containers(t *testing.T, files []string, all bool) []string {
	t.Helper()
	var ids []string
	for _, e := range ps(t, files) {
		if all || e.State == "running" {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

type container struct {
	Name   string
	Config struct{ User string }
	State  struct {
		Running    bool
		Pid        int
		ExitCode   int
		FinishedAt time.Time
	}
}

func inspect(t *testing.T, ids []string) []container {
	t.Helper()
	out, err := exec.Command("docker", append([]string{"inspect"}, ids...)...).Output()
	if err != nil {
		t.Fatalf("docker inspect: %v", err)
	}
	var cs []container
	if err := json.Unmarshal(out, &cs); err != nil {
		t.Fatal(err)
	}
	return cs
}

// nonRoot checks the user each running container is configured with, and the
// user its first process really runs as (from /proc, on this host).
func nonRoot(t *testing.T, files []string) {
	t.Helper()
	for _, c := range inspect(t, containers(t, files, false)) {
		user, _, _ := strings.Cut(c.Config.User, ":")
		if user == "" || user == "0" || user == "root" {
			t.Errorf("%s is configured to run as %q (root)", c.Name, c.Config.User)
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.State.Pid))
		if err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" && f[1] == "0" {
				t.Errorf("%s: its process runs as uid 0", c.Name)
			}
		}
	}
}

func frames(gen *sample.Generator, n int) []publish.Message {
	src := publish.Frames(gen, "annotations", n)
	msgs := make([]publish.Message, 0, n)
	for {
		m, err := src.Next()
		if err != nil {
			return msgs
		}
		msgs = append(msgs, m)
	}
}

type slice struct {
	msgs []publish.Message
	i    int
}

func (s *slice) Next() (publish.Message, error) {
	if s.i == len(s.msgs) {
		return publish.Message{}, io.EOF
	}
	s.i++
	return s.msgs[s.i-1], nil
}

// endpoints are one variant's published ports, as the test reaches them from this
// host.
type endpoints struct {
	nats     string
	natsOpts []nats.Option // TLS and the publisher's password, for the secured variant
	es       string
	esUser   string // empty: no credentials
	esPass   string
	backend  string
	client   *http.Client // trusts the variant's CA, if it has one
}

func (e endpoints) connect(t *testing.T) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(e.nats, e.natsOpts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", e.nats, err)
	}
	return nc
}

// publish publishes msgs from this host through the nats service's published
// port, with the repository's publisher.
func (e endpoints) publish(t *testing.T, msgs []publish.Message) {
	t.Helper()
	nc := e.connect(t)
	defer nc.Close()
	// The client's limit of pending publishes is the window publish.Run keeps.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stored, dups, err := publish.Run(ctx, js, &slice{msgs: msgs}, publish.Options{Window: 4096}, func() {})
	if err != nil || stored != len(msgs) || dups != 0 {
		t.Fatalf("published %d: %d stored, %d duplicates, err %v", len(msgs), stored, dups, err)
	}
}

func (e endpoints) consumer(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	nc := e.connect(t)
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, "ANNOTATIONS", "webserver")
	if err != nil {
		t.Fatalf("the durable consumer: %v", err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// drained waits until the durable consumer has nothing pending or unacknowledged.
func (e endpoints) drained(t *testing.T) {
	t.Helper()
	var info *jetstream.ConsumerInfo
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if info = e.consumer(t); info.NumPending == 0 && info.NumAckPending == 0 {
			return
		}
	}
	t.Fatalf("the consumer still has %d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
}

// esDo sends a request to Elasticsearch's published port as user (none if
// empty) and returns the status and the body.
func (e endpoints) esDo(t *testing.T, user, password, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.es+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if strings.HasSuffix(path, "_bulk") {
		req.Header.Set("Content-Type", "application/x-ndjson")
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, e.es+path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// esCount is the number of documents Elasticsearch has in the pipeline's indices,
// after a refresh, counted by the variant's Elasticsearch user.
func (e endpoints) esCount(t *testing.T) int {
	t.Helper()
	e.esDo(t, e.esUser, e.esPass, "POST", "/annotations-*/_refresh", "")
	status, body := e.esDo(t, e.esUser, e.esPass, "GET", "/annotations-*/_count", "")
	// No index yet, or one just created whose shard is not started yet.
	if status == http.StatusNotFound || status == http.StatusServiceUnavailable {
		return 0
	}
	var count struct{ Count int }
	if err := json.Unmarshal([]byte(body), &count); err != nil || status != http.StatusOK {
		t.Fatalf("count documents: %d %s (%v)", status, body, err)
	}
	return count.Count
}

func (e endpoints) waitForCount(t *testing.T, want int) {
	t.Helper()
	n := 0
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if n = e.esCount(t); n >= want {
			break
		}
	}
	if n != want {
		t.Fatalf("Elasticsearch holds %d documents, want %d", n, want)
	}
}

func (e endpoints) getJSONStream(t *testing.T, r [2]string, fields string) []json.RawMessage {
	t.Helper()
	url := fmt.Sprintf("%s/getJsonStream?start_date=%s&end_date=%s", e.backend, r[0], r[1])
	if fields != "" {
		url += "&fields=" + fields
	}
	res, err := e.client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %s %s", url, res.Status, body)
	}
	var docs []json.RawMessage
	if err := json.NewDecoder(res.Body).Decode(&docs); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return docs
}

func docID(t *testing.T, doc json.RawMessage) string {
	t.Helper()
	var f struct {
		CameraID  string `json:"camera_id"`
		Frame     uint64 `json:"frame"`
		Timestamp string `json:"timestamp"`
	}
	if err := json.Unmarshal(doc, &f); err != nil || f.CameraID == "" || f.Timestamp == "" {
		t.Fatalf("document without camera_id, frame and timestamp (%v): %s", err, doc)
	}
	return sample.Frame{CameraID: f.CameraID, Frame: f.Frame, Timestamp: f.Timestamp}.MsgID()
}

// sameFrame checks that a document is the published frame plus @timestamp and
// @nats.
func sameFrame(t *testing.T, id string, sent []byte, doc json.RawMessage) {
	t.Helper()
	var want, got map[string]any
	if err := json.Unmarshal(sent, &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(doc, &got); err != nil {
		t.Fatal(err)
	}
	for _, added := range []string{"@timestamp", "@nats"} {
		if _, ok := got[added]; !ok {
			t.Errorf("document %s lacks %s", id, added)
		}
		delete(got, added)
	}
	wantJSON, _ := json.Marshal(want)
	gotJSON, _ := json.Marshal(got)
	if !bytes.Equal(wantJSON, gotJSON) {
		t.Errorf("document %s differs from the frame published:\n got %s\nwant %s", id, gotJSON, wantJSON)
	}
}

// sameIDs checks that the backend returns exactly the frames of msgs, each once,
// for the range r.
func (e endpoints) sameIDs(t *testing.T, r [2]string, msgs []publish.Message) {
	t.Helper()
	want := map[string]bool{}
	for _, m := range msgs {
		want[m.ID] = true
	}
	seen := map[string]bool{}
	for _, d := range e.getJSONStream(t, r, "camera_id,frame,timestamp") {
		id := docID(t, d)
		switch {
		case seen[id]:
			t.Errorf("document %s came back twice", id)
		case !want[id]:
			t.Errorf("document %s was never published", id)
		}
		seen[id] = true
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("document %s is missing", id)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("%d distinct documents, want %d", len(seen), len(want))
	}
}

// metric reads one of the webserver's Prometheus counters (without labels).
func metric(t *testing.T, name string) float64 {
	t.Helper()
	res, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatalf("webserver metrics: %v", err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("the webserver's metrics have no %s", name)
	return 0
}

// pebbleRoots is the root Pebble's certificates chain to (made at its start).
func pebbleRoots(t *testing.T) *x509.CertPool {
	t.Helper()
	// Pebble's management API serves its own test certificate: this one request is
	// not verified, the certificate served by the backend is.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	res, err := client.Get(pebbleURL + "/roots/0")
	if err != nil {
		t.Fatalf("Pebble's root: %v", err)
	}
	defer res.Body.Close()
	pem, _ := io.ReadAll(res.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("Pebble's root is not PEM: %s", pem)
	}
	return pool
}

// serveCertificate connects to the backend's published port as a client of
// domain would, verifies its certificate against roots, checks /healthz over it,
// and returns the certificate.
func serveCertificate(t *testing.T, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	cfg := &tls.Config{ServerName: domain, RootCAs: roots}
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: cfg}}
	res, err := client.Get("https://127.0.0.1:5000/healthz")
	if err != nil {
		t.Fatalf("HTTPS to the backend as %s, trusting Pebble's root: %v", domain, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.TLS == nil {
		t.Fatalf("GET /healthz over HTTPS: %s", res.Status)
	}
	return res.TLS.PeerCertificates[0]
}
