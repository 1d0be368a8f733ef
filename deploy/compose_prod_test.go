//go:build integration

package deploy

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/certcache"
	"github.com/annotated-data/pipeline/internal/consumer"
	"github.com/annotated-data/pipeline/internal/essecurity"
	"github.com/annotated-data/pipeline/internal/natsconn"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// prodCompose is what docker-compose.prod.yml adds to docker-compose.yml.
type prodCompose struct {
	Services map[string]struct {
		Environment map[string]string `yaml:"environment"`
		Secrets     []string          `yaml:"secrets"`
		Volumes     []string          `yaml:"volumes"`
		Command     any               `yaml:"command"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
	} `yaml:"services"`
	Secrets map[string]struct {
		Environment string `yaml:"environment"`
	} `yaml:"secrets"`
}

// loadProdCompose reads docker-compose.prod.yml.
func loadProdCompose(t *testing.T) prodCompose {
	t.Helper()
	raw, err := os.ReadFile("../docker-compose.prod.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c prodCompose
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.prod.yml does not parse: %v", err)
	}
	return c
}

// What can be checked without a Docker engine: security is on, the binaries get
// https, the CA from the shared volume and their secrets as files, and every
// secret comes from the example env file's variables.
func TestProductionComposeSecuresElasticsearchAndGivesTheBinariesTheCAAndFiles(t *testing.T) {
	c := loadProdCompose(t)
	// The override must apply to the services of the base file.
	base := readCompose(t, "docker-compose.yml")
	for name := range c.Services {
		if _, ok := base.Services[name]; !ok && name != "setup" && name != "setup-security" {
			t.Errorf("docker-compose.prod.yml overrides %s, which docker-compose.yml does not have", name)
		}
	}

	es := c.Services["elasticsearch"]
	for _, setting := range []string{"xpack.security.enabled", "xpack.security.http.ssl.enabled"} {
		if es.Environment[setting] != "true" {
			t.Errorf("elasticsearch: %s = %q, want true", setting, es.Environment[setting])
		}
	}
	if !slices.Contains(es.Volumes, "certs:/usr/share/elasticsearch/config/certs") || !slices.Contains(c.Services["setup"].Volumes, "certs:/usr/share/elasticsearch/config/certs") {
		t.Errorf("setup and elasticsearch do not share the certs volume: %v, %v", c.Services["setup"].Volumes, es.Volumes)
	}
	if !strings.Contains(commandText(c.Services["setup"].Command), "chmod 644 config/certs/ca/ca.crt") {
		t.Errorf("setup does not make the CA certificate readable by the binaries' non-root user")
	}

	example := envFileNames(t, "secrets.env.example")
	for name, s := range c.Secrets {
		if !slices.Contains(example, s.Environment) {
			t.Errorf("secret %s comes from %q, which deploy/secrets.env.example does not name", name, s.Environment)
		}
	}
	for _, bin := range []string{"webserver", "backend"} {
		s := c.Services[bin]
		env := s.Environment
		if !strings.HasPrefix(env["ELASTICSEARCH_URL"], "https://") {
			t.Errorf("%s: ELASTICSEARCH_URL = %q, want https://", bin, env["ELASTICSEARCH_URL"])
		}
		if env["ELASTICSEARCH_CA_CERT"] != "/certs/ca/ca.crt" || !slices.Contains(s.Volumes, "certs:/certs:ro") {
			t.Errorf("%s does not read the CA from the certs volume: CA %q, volumes %v", bin, env["ELASTICSEARCH_CA_CERT"], s.Volumes)
		}
		if d := s.DependsOn["setup-security"].Condition; d != "service_completed_successfully" {
			t.Errorf("%s waits for setup-security with %q, want service_completed_successfully (its user exists then)", bin, d)
		}
		for k, v := range env {
			if !slices.Contains(readBy[bin], k) {
				t.Errorf("docker-compose.prod.yml sets %s for the %s, which does not read it", k, bin)
			}
			if secretVariable(k) {
				t.Errorf("%s: %s puts a secret in the environment; give it as a file (%s_FILE)", bin, k, k)
			}
			if name, ok := strings.CutSuffix(k, "_FILE"); ok && secretVariable(name) {
				secret, ok := strings.CutPrefix(v, "/run/secrets/")
				if _, defined := c.Secrets[secret]; !ok || !defined || !slices.Contains(s.Secrets, secret) {
					t.Errorf("%s: %s=%s is not a secret granted to it", bin, k, v)
				}
			}
		}
	}
}

// The roles and users come from deploy/elasticsearch-security.json, applied by
// setup-security as the elastic user: it is given the file read-only and every
// password the file names, as secrets, never in its environment.
func TestProductionComposeAppliesTheSecurityFileWithEveryPasswordAsASecret(t *testing.T) {
	c := loadProdCompose(t)
	s, ok := c.Services["setup-security"]
	if !ok {
		t.Fatal("docker-compose.prod.yml has no setup-security service")
	}
	if cmd := commandText(s.Command); cmd != "setup-security --file /etc/pipeline/elasticsearch-security.json --secrets /run/secrets" {
		t.Errorf("setup-security runs %q", cmd)
	}
	if !slices.Contains(s.Volumes, "./deploy/elasticsearch-security.json:/etc/pipeline/elasticsearch-security.json:ro") {
		t.Errorf("setup-security does not mount deploy/elasticsearch-security.json read-only: %v", s.Volumes)
	}
	if d := s.DependsOn["elasticsearch"].Condition; d != "service_healthy" {
		t.Errorf("setup-security waits for elasticsearch with %q, want service_healthy", d)
	}
	want := map[string]string{
		"ELASTICSEARCH_URL":           "https://elasticsearch:9200",
		"ELASTICSEARCH_USERNAME":      "elastic",
		"ELASTICSEARCH_PASSWORD_FILE": "/run/secrets/elastic_password",
		"ELASTICSEARCH_CA_CERT":       "/certs/ca/ca.crt",
	}
	for k, v := range want {
		if s.Environment[k] != v {
			t.Errorf("setup-security: %s = %q, want %q", k, s.Environment[k], v)
		}
	}
	for k := range s.Environment {
		if secretVariable(k) {
			t.Errorf("setup-security: %s puts a secret in the environment; give it as a file", k)
		}
	}
	f, err := essecurity.Load("elasticsearch-security.json", "annotations")
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{"elastic_password"}
	for _, u := range f.Users {
		secrets = append(secrets, u.PasswordSecret)
	}
	for _, secret := range secrets {
		if _, defined := c.Secrets[secret]; !defined || !slices.Contains(s.Secrets, secret) {
			t.Errorf("setup-security is not given the secret %s (defined: %v; its secrets: %v)", secret, defined, s.Secrets)
		}
	}
}

func secretVariable(name string) bool {
	for _, suffix := range []string{"PASSWORD", "API_KEY", "TOKEN"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

func commandText(cmd any) string {
	if list, ok := cmd.([]any); ok {
		var parts []string
		for _, p := range list {
			parts = append(parts, p.(string))
		}
		return strings.Join(parts, " ")
	}
	s, _ := cmd.(string)
	return s
}

// deploy/nats-server.conf, run as compose mounts it (its certificate paths
// pointing at a test CA's files): the webserver's settings in
// docker-compose.prod.yml connect over TLS and manage streams; the publisher's
// user publishes frames and can do nothing else.
func TestProductionNATSConfigServesTheWebserverAndOnlyLetsThePublisherPublish(t *testing.T) {
	ca := testenv.NewCA(t, "prod test CA")
	certFile, keyFile := ca.WriteKeyPair(ca.Issue("nats", "nats", "localhost", "127.0.0.1"))
	raw, err := os.ReadFile("nats-server.conf")
	if err != nil {
		t.Fatal(err)
	}
	client, monitor := testenv.FreeAddr(t), testenv.FreeAddr(t)
	conf := strings.NewReplacer(
		"/certs/nats/nats.crt", certFile, "/certs/nats/nats.key", keyFile, "/data", t.TempDir(),
		"0.0.0.0:4222", client, "0.0.0.0:8222", monitor,
	).Replace(string(raw))
	path := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_WEBSERVER_PASSWORD", "webserver-secret")
	t.Setenv("NATS_PUBLISHER_PASSWORD", "publisher-secret")
	t.Setenv("NATS_BACKEND_PASSWORD", "backend-secret")
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("deploy/nats-server.conf: %v", err)
	}
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	connect := func(user, password string) jetstream.JetStream {
		t.Helper()
		nc, err := natsconn.Connect(ctx, natsconn.Config{URLs: []string{"tls://" + client}, Name: user, User: user, Password: password, CACertFile: ca.CertFile}, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	webserver := connect("webserver", "webserver-secret")
	if _, err := webserver.CreateStream(ctx, jetstream.StreamConfig{Name: "ANNOTATIONS", Subjects: []string{"annotations.>"}}); err != nil {
		t.Fatalf("the webserver's user cannot create the stream: %v", err)
	}
	publisher := connect("publisher", "publisher-secret")
	if _, err := publisher.Publish(ctx, "annotations.cam-01", []byte(`{"frame":1}`)); err != nil {
		t.Errorf("the publisher's user cannot publish a frame: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	if err := publisher.DeleteStream(short, "ANNOTATIONS"); err == nil {
		t.Errorf("the publisher's user could delete the stream")
	}

	if _, err := webserver.CreateOrUpdateConsumer(ctx, "ANNOTATIONS", jetstream.ConsumerConfig{Durable: "webserver", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatalf("the webserver's user cannot create its consumer: %v", err)
	}
	backend := connect("backend", "backend-secret")
	if _, err := backend.Consumer(ctx, "ANNOTATIONS", "webserver"); err != nil {
		t.Errorf("the backend's user cannot read the webserver's progress (follow=true): %v", err)
	}
	short2, cancelShort2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort2()
	if _, err := backend.Publish(short2, "annotations.cam-01", []byte(`{"frame":2}`)); err == nil {
		t.Errorf("the backend's user could publish a frame")
	}
	// The webserver's notices of settled batches: it publishes them, the backend
	// hears them, and nobody else may send one.
	notices := consumer.SettledSubject("ANNOTATIONS", "webserver")
	listen := func(js jetstream.JetStream) *nats.Subscription {
		t.Helper()
		sub, err := js.Conn().SubscribeSync(notices)
		if err != nil {
			t.Fatal(err)
		}
		js.Conn().Flush()
		return sub
	}
	heard, overheard := listen(backend), listen(publisher)
	for _, who := range []jetstream.JetStream{publisher, backend} {
		who.Conn().Publish(notices, []byte("forged"))
		who.Conn().Flush()
	}
	webserver.Conn().Publish(notices, nil)
	webserver.Conn().Flush()
	if m, err := heard.NextMsg(5 * time.Second); err != nil || len(m.Data) != 0 {
		t.Errorf("the backend's user did not hear the webserver's notice first: %v, %v", m, err)
	}
	if m, err := heard.NextMsg(500 * time.Millisecond); err == nil {
		t.Errorf("a notice from another user than the webserver arrived: %q", m.Data)
	}
	if m, err := overheard.NextMsg(500 * time.Millisecond); err == nil {
		t.Errorf("the publisher's user hears the notices: %q", m.Data)
	}
	cache, err := certcache.Open(ctx, backend, certcache.Config{Key: make([]byte, 32)}, log)
	if err != nil {
		t.Fatalf("the backend's user cannot open the shared certificate cache (TLS_CACHE=nats): %v", err)
	}
	if err := cache.Put(ctx, "acme_account+key", []byte("account")); err != nil {
		t.Errorf("the backend's user cannot write the certificate cache: %v", err)
	}
	if got, err := cache.Get(ctx, "acme_account+key"); err != nil || string(got) != "account" {
		t.Errorf("the backend's user reads back %q, %v from the certificate cache", got, err)
	}
}
