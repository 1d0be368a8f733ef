package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Pebble is Let's Encrypt's test ACME CA (github.com/letsencrypt/pebble/v2, a tool
// in go.mod), with its pebble-challtestsrv as the DNS server, answering 127.0.0.1
// for every name: a certificate for any test domain can be obtained through real
// challenge validation against a server on this machine.
type Pebble struct {
	// DirectoryURL is the ACME directory, served over HTTPS.
	DirectoryURL string
	// CARootsFile is the PEM root that Pebble's own HTTPS endpoint chains to: what
	// an ACME client must trust to talk to it.
	CARootsFile string
	// Process is Pebble itself, whose output tells which challenges it validated.
	Process *Process

	managementURL string
}

// StartPebble starts Pebble and its DNS server. Pebble validates HTTP-01 challenges
// on httpPort of 127.0.0.1 and TLS-ALPN-01 on tlsPort. Both stop when the test ends.
func StartPebble(t testing.TB, httpPort, tlsPort int) *Pebble {
	t.Helper()
	return StartPebbleWith(t, httpPort, tlsPort, PebbleOptions{})
}

// PebbleOptions change what StartPebble starts.
type PebbleOptions struct {
	// Validity of the certificates Pebble issues (default 90 days); a short one
	// has autocert renew within a test.
	Validity time.Duration
	// Env is added to Pebble's environment, e.g. PEBBLE_VA_NOSLEEP=0 to have it
	// wait a random time before validating, as a real CA may.
	Env map[string]string
}

// StartPebbleWith is StartPebble with options.
func StartPebbleWith(t testing.TB, httpPort, tlsPort int, opts PebbleOptions) *Pebble {
	t.Helper()
	validity := 90 * 24 * time.Hour
	if opts.Validity > 0 {
		validity = opts.Validity
	}
	dir := t.TempDir()
	bins, err := buildTools(dir, "github.com/letsencrypt/pebble/v2/cmd/pebble", "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv")
	if err != nil {
		t.Fatal(err)
	}
	moduleDir, err := moduleDir("github.com/letsencrypt/pebble/v2")
	if err != nil {
		t.Fatal(err)
	}

	dnsAddr, challtestManagement := FreeAddr(t), FreeAddr(t)
	StartProcess(t, bins["pebble-challtestsrv"], nil,
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-dnsserver", dnsAddr, "-management", challtestManagement,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "")

	// Pebble's sample configuration names its TLS files relative to the module;
	// this one names them absolutely, and binds to loopback ports.
	listen, management := FreeAddr(t), FreeAddr(t)
	certs := filepath.Join(moduleDir, "test", "certs")
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        management,
		"certificate":                    filepath.Join(certs, "localhost", "cert.pem"),
		"privateKey":                     filepath.Join(certs, "localhost", "key.pem"),
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles":                       map[string]any{"default": map[string]any{"description": "test", "validityPeriod": int(validity.Seconds())}},
	}}
	cfgFile := filepath.Join(dir, "pebble-config.json")
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PEBBLE_VA_NOSLEEP":      "1", // no random delay before validating
		"PEBBLE_WFE_NONCEREJECT": "0", // no deliberately rejected nonces
	}
	maps.Copy(env, opts.Env)
	proc := StartProcess(t, bins["pebble"], env, "-config", cfgFile, "-dnsserver", dnsAddr)

	p := &Pebble{
		DirectoryURL:  "https://" + listen + "/dir",
		CARootsFile:   filepath.Join(certs, "pebble.minica.pem"),
		Process:       proc,
		managementURL: "https://" + management,
	}
	client := p.client(t)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		res, err := client.Get(p.DirectoryURL)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Pebble's directory %s did not answer within 30s (last: %v)", p.DirectoryURL, err)
		}
	}
}

// Orders is how many orders Pebble has been asked for so far, from its log.
func (p *Pebble) Orders() int { return strings.Count(p.Process.Output(), "Added order ") }

// Issued is how many certificates Pebble has issued so far, from its log.
func (p *Pebble) Issued() int { return strings.Count(p.Process.Output(), "Issued certificate serial ") }

// IssuerRoots returns the root that the certificates Pebble issues chain to. Pebble
// makes a new one at each start.
func (p *Pebble) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	res, err := p.client(t).Get(p.managementURL + "/roots/0")
	if err != nil {
		t.Fatalf("fetch Pebble's issuing root: %v", err)
	}
	defer res.Body.Close()
	pem, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("fetch Pebble's issuing root: %s %v", res.Status, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("Pebble's issuing root is not PEM:\n%s", pem)
	}
	return pool
}

// client trusts Pebble's own HTTPS endpoints.
func (p *Pebble) client(t testing.TB) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(p.CARootsFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// PortOf returns the port of a host:port address.
func PortOf(t testing.TB, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// buildTools builds the named main packages of go.mod's tools into dir and returns
// their paths by base name.
func buildTools(dir string, pkgs ...string) (map[string]string, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %v: %w\n%s", pkgs, err, out)
	}
	paths := map[string]string{}
	for _, p := range pkgs {
		paths[filepath.Base(p)] = filepath.Join(dir, filepath.Base(p))
	}
	return paths, nil
}

// moduleDir is where the Go module cache holds a module of go.mod.
func moduleDir(module string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", module, err)
	}
	return strings.TrimSpace(string(out)), nil
}
