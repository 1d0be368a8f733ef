package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/essecurity"
)

// Secured is the Elasticsearch node with Elasticsearch's own security on (TLS,
// native users and roles, API keys) that `make test` starts beside the plain one
// (deploy/local/services.sh, service elasticsearch-secured). Tests share it, each
// with its own users, roles and index prefix.
type Secured struct {
	// URL is the node's https:// address.
	URL string
	// CA signed the node's HTTP certificate (made by services.sh at first start).
	CA *x509.Certificate
	// CACertFile is CA as a PEM file: what clients are told to trust.
	CACertFile string
	// AdminURL is a plain-HTTP door to the node for the test's own checks
	// (counting documents, deleting indices) as the elastic superuser, so that
	// the helpers written for the plain node work on this one. The binaries under
	// test never use it.
	AdminURL string

	password string // the elastic user's
	client   *http.Client
}

// SecuredElasticsearch returns the secured node: the one in
// ELASTICSEARCH_SECURED_URL, else the one `make services ES_SECURITY=on`
// recorded. Like ElasticsearchURL, a test that needs it fails, never skips, when
// there is none.
func SecuredElasticsearch(t testing.TB) *Secured {
	t.Helper()
	value := func(key string) string {
		if v := os.Getenv(key); v != "" {
			return v
		}
		return servicesValue(key)
	}
	s := &Secured{URL: value("ELASTICSEARCH_SECURED_URL"), CACertFile: value("ELASTICSEARCH_SECURED_CA_CERT"), password: value("ELASTICSEARCH_SECURED_PASSWORD")}
	if s.URL == "" || s.CACertFile == "" || s.password == "" {
		t.Fatalf("no Elasticsearch with security for this test: run it through `make test`, or start one with `make services ES_SECURITY=on` " +
			"(or set ELASTICSEARCH_SECURED_URL, ELASTICSEARCH_SECURED_CA_CERT and ELASTICSEARCH_SECURED_PASSWORD)")
	}
	pemBytes, err := os.ReadFile(s.CACertFile)
	if err != nil {
		t.Fatalf("the secured node's CA: %v", err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatalf("the secured node's CA %s holds no PEM certificate", s.CACertFile)
	}
	if s.CA, err = x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatalf("the secured node's CA %s: %v", s.CACertFile, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.CA)
	s.client = &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	target, err := url.Parse(s.URL)
	if err != nil {
		t.Fatalf("ELASTICSEARCH_SECURED_URL %q: %v", s.URL, err)
	}
	admin := httputil.NewSingleHostReverseProxy(target)
	admin.Transport = s.client.Transport
	direct := admin.Director
	admin.Director = func(r *http.Request) {
		direct(r)
		r.Host = target.Host
		r.SetBasicAuth("elastic", s.password)
	}
	door := httptest.NewServer(admin)
	t.Cleanup(door.Close)
	s.AdminURL = door.URL
	if err := waitHealthy(s.AdminURL, 30*time.Second); err != nil {
		t.Fatalf("Elasticsearch with security at %s is not usable: %v; start it with `make services ES_SECURITY=on`", s.URL, err)
	}
	return s
}

// SuperuserEnv is the environment that makes a binary connect as the elastic
// user, trusting the node's CA: what `webserver setup-security` runs with.
func (s *Secured) SuperuserEnv() map[string]string {
	return map[string]string{"ELASTICSEARCH_URL": s.URL, "ELASTICSEARCH_CA_CERT": s.CACertFile,
		"ELASTICSEARCH_USERNAME": "elastic", "ELASTICSEARCH_PASSWORD": s.password}
}

// Fingerprint is the SHA-256 fingerprint of the CA, as openssl prints it.
func (s *Secured) Fingerprint() string { return Fingerprint(s.CA) }

// Do sends a request to the node with the given Authorization header ("" for
// none) and returns the status and body: the tests' way to ask the node directly
// what a user may do.
func (s *Secured) Do(t testing.TB, authorization, method, path string, body any) (int, []byte) {
	t.Helper()
	var reader io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		reader = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, s.URL+path, reader)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	req.Header.Set("Content-Type", "application/json")
	if strings.HasSuffix(path, "_bulk") {
		req.Header.Set("Content-Type", "application/x-ndjson")
	}
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res.StatusCode, data
}

// admin sends a request as the elastic user and fails the test on an error answer.
func (s *Secured) admin(t testing.TB, method, path string, body any) []byte {
	t.Helper()
	code, data := s.Do(t, s.Superuser(), method, path, body)
	if code >= 300 {
		t.Fatalf("%s %s as elastic: %d %s", method, path, code, data)
	}
	return data
}

// Superuser is the Authorization header of the elastic user, for Do.
func (s *Secured) Superuser() string { return Basic("elastic", s.password) }

// Basic is the Authorization header of HTTP basic authentication.
func Basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// Accounts are the users and API keys of a security file applied for one test:
// each holder's name, as the binaries are given it, and its secret.
type Accounts struct {
	// Names maps the file's user names to the names they were created under.
	Names map[string]string
	// Passwords maps the file's user names to their passwords.
	Passwords map[string]string
	// APIKeys maps the file's API key names to their encoded values.
	APIKeys map[string]string
}

// Env is the environment that makes a binary authenticate as the file's user.
func (a Accounts) Env(user string) map[string]string {
	return map[string]string{"ELASTICSEARCH_USERNAME": a.Names[user], "ELASTICSEARCH_PASSWORD": a.Passwords[user]}
}

// Apply creates, as `webserver setup-security` would, the roles, users and API
// keys of f for this test alone: every name gets a prefix of the test's own,
// every user a fresh password, and everything is deleted when the test ends.
func (s *Secured) Apply(t testing.TB, f essecurity.File) Accounts {
	t.Helper()
	prefix := "t" + randomHex(t, 4) + "_"
	renamed := f.Renamed(prefix)
	secrets := essecurity.Dir(t.TempDir())
	accounts := Accounts{Names: map[string]string{}, Passwords: map[string]string{}, APIKeys: map[string]string{}}
	for name, u := range f.Users {
		password := "pw-" + randomHex(t, 12)
		if err := os.WriteFile(filepath.Join(string(secrets), prefix+u.PasswordSecret), []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		accounts.Names[name], accounts.Passwords[name] = prefix+name, password
	}
	t.Cleanup(func() {
		for name := range renamed.Users {
			s.Do(t, s.Superuser(), http.MethodDelete, "/_security/user/"+name, nil)
		}
		for name := range renamed.APIKeys {
			s.Do(t, s.Superuser(), http.MethodDelete, "/_security/api_key", map[string]any{"name": name})
		}
		for name := range renamed.Roles {
			s.Do(t, s.Superuser(), http.MethodDelete, "/_security/role/"+name, nil)
		}
	})
	if err := essecurity.Apply(context.Background(), s.transport(), renamed, secrets, io.Discard); err != nil {
		t.Fatalf("apply the security file: %v", err)
	}
	for name, k := range f.APIKeys {
		key, err := secrets.Read(prefix + k.Secret)
		if err != nil {
			t.Fatal(err)
		}
		accounts.APIKeys[name] = key
	}
	return accounts
}

// transport sends requests to the node as the elastic user, for esapi.
func (s *Secured) transport() roundTripper {
	return roundTripper{s: s}
}

type roundTripper struct{ s *Secured }

func (r roundTripper) Perform(req *http.Request) (*http.Response, error) {
	u, err := url.Parse(r.s.URL)
	if err != nil {
		return nil, err
	}
	req.URL.Scheme, req.URL.Host = u.Scheme, u.Host
	req.SetBasicAuth("elastic", r.s.password)
	if req.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return r.s.client.Do(req)
}

// Role creates a role of the given privileges for this test and returns its
// name; it is deleted when the test ends.
func (s *Secured) Role(t testing.TB, role essecurity.Role) string {
	t.Helper()
	name := "t" + randomHex(t, 4) + "_role"
	s.admin(t, http.MethodPut, "/_security/role/"+name, role)
	t.Cleanup(func() { s.Do(t, s.Superuser(), http.MethodDelete, "/_security/role/"+name, nil) })
	return name
}

// User creates a user holding roles for this test and returns its name and
// password; it is deleted when the test ends.
func (s *Secured) User(t testing.TB, roles ...string) (name, password string) {
	t.Helper()
	name, password = "t"+randomHex(t, 4)+"_user", "pw-"+randomHex(t, 12)
	if roles == nil {
		roles = []string{}
	}
	s.admin(t, http.MethodPut, "/_security/user/"+name, map[string]any{"password": password, "roles": roles})
	t.Cleanup(func() { s.Do(t, s.Superuser(), http.MethodDelete, "/_security/user/"+name, nil) })
	return name, password
}

// APIKey creates an API key limited to role and returns its encoded value; it is
// invalidated when the test ends.
func (s *Secured) APIKey(t testing.TB, role essecurity.Role) string {
	t.Helper()
	name := "t" + randomHex(t, 4) + "_key"
	var key struct {
		Encoded string `json:"encoded"`
	}
	data := s.admin(t, http.MethodPost, "/_security/api_key", map[string]any{"name": name, "role_descriptors": map[string]any{"r": role}})
	if err := json.Unmarshal(data, &key); err != nil || key.Encoded == "" {
		t.Fatalf("create API key: %v (%s)", err, data)
	}
	t.Cleanup(func() {
		s.Do(t, s.Superuser(), http.MethodDelete, "/_security/api_key", map[string]any{"name": name})
	})
	return key.Encoded
}

// String never shows the elastic password, should a Secured be printed.
func (s *Secured) String() string { return fmt.Sprintf("secured Elasticsearch at %s", s.URL) }

// randomHex is n random bytes in hex: names and secrets no other test uses.
func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
