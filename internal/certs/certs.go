// Package certs gives the backend its TLS: certificates obtained and renewed over
// ACME (autocert), a certificate read from files and read again when they change,
// or none at all.
package certs

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// TLS modes.
const (
	Off      = "off"      // plain HTTP: local runs, or behind a TLS-terminating proxy
	File     = "file"     // a certificate and key from files, read again when they change
	Autocert = "autocert" // certificates obtained and renewed over ACME
)

// LetsEncryptDirectory is the ACME directory of Let's Encrypt's production CA.
const LetsEncryptDirectory = "https://acme-v02.api.letsencrypt.org/directory"

// Config is how the backend serves HTTPS.
type Config struct {
	Mode string // Off (the default), File or Autocert

	// File: a PEM certificate chain and its key.
	CertFile, KeyFile string

	// Autocert
	Domains  []string // the host names to obtain certificates for
	CacheDir string   // account key and certificates, kept across restarts
	// Cache, when set, is used instead of CacheDir: one that replicas share
	// (internal/certcache), so they answer each other's challenges.
	Cache            autocert.Cache
	ACMEEmail        string // contact for the CA's notices (optional)
	ACMEDirectoryURL string // default LetsEncryptDirectory
	ACMEHTTPAddr     string // HTTP-01 challenges and the redirect to HTTPS (default ":80")
	ACMECARoots      string // PEM file of extra roots trusted for the ACME directory

	// ObserveExpiry, when set, hears the expiry of the certificates handshakes are
	// served with (ExpiryGauge), in file and autocert modes. slot is what a new
	// certificate replaces: the one pair of files in file mode, the host name
	// asked for in autocert mode.
	ObserveExpiry func(slot, name string, notAfter time.Time)
}

// Setup is what a TLS mode adds to the backend's servers.
type Setup struct {
	// TLSConfig is for the API's listener; nil when TLS is off.
	TLSConfig *tls.Config
	// HTTPHandler is for the plain-HTTP listener on Config.ACMEHTTPAddr: ACME HTTP-01
	// challenges, and a redirect to HTTPS for everything else. nil unless autocert.
	HTTPHandler http.Handler
}

// tls12CipherSuites are the only suites offered to TLS 1.2 clients: ECDHE for
// forward secrecy, and AEAD ciphers only, as the CBC ones are open to padding
// oracles such as LUCKY13. (TLS 1.3's suites are all AEAD and not configurable.)
// ECDSA and RSA variants both, for whichever key the certificate has.
var tls12CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// hardened sets what every TLS mode serves with: TLS 1.2 and newer, and for 1.2
// only tls12CipherSuites.
func hardened(c *tls.Config) *tls.Config {
	c.MinVersion = tls.VersionTLS12
	c.CipherSuites = tls12CipherSuites
	return c
}

func (c Config) withDefaults() Config {
	c.ACMEDirectoryURL = cmp.Or(c.ACMEDirectoryURL, LetsEncryptDirectory)
	c.ACMEHTTPAddr = cmp.Or(c.ACMEHTTPAddr, ":80")
	return c
}

// New prepares the TLS mode of cfg. listenAddr is the API's address, which the
// HTTP-to-HTTPS redirect points to.
func New(cfg Config, listenAddr string, log *slog.Logger) (*Setup, error) {
	cfg = cfg.withDefaults()
	switch cmp.Or(cfg.Mode, Off) {
	case Off:
		return &Setup{}, nil
	case File:
		fc, err := newFileCert(cfg.CertFile, cfg.KeyFile, log)
		if err != nil {
			return nil, err
		}
		return &Setup{TLSConfig: hardened(&tls.Config{
			GetCertificate: observed(fc.GetCertificate, cfg.ObserveExpiry, func(*tls.ClientHelloInfo) string { return cfg.CertFile }),
			NextProtos:     []string{"h2", "http/1.1"},
		})}, nil
	case Autocert:
		return newAutocert(cfg, listenAddr, log)
	default:
		return nil, fmt.Errorf("unknown TLS mode %q", cfg.Mode)
	}
}

func newAutocert(cfg Config, listenAddr string, log *slog.Logger) (*Setup, error) {
	client := &acme.Client{DirectoryURL: cfg.ACMEDirectoryURL}
	if cfg.ACMECARoots != "" {
		hc, err := clientTrusting(cfg.ACMECARoots)
		if err != nil {
			return nil, err
		}
		client.HTTPClient = hc
	}
	if cfg.Cache == nil {
		cfg.Cache = autocert.DirCache(cfg.CacheDir)
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(cfg.Domains...),
		Cache:      cfg.Cache,
		Email:      cfg.ACMEEmail,
		Client:     client,
	}

	tlsConfig := hardened(m.TLSConfig()) // also answers TLS-ALPN-01 challenges on the API's port
	getCertificate := observed(tlsConfig.GetCertificate, cfg.ObserveExpiry, func(hello *tls.ClientHelloInfo) string {
		return strings.ToLower(hello.ServerName)
	})
	tlsConfig.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert, err := getCertificate(hello)
		if err != nil {
			// Failures for our own names are what an operator must hear about (the CA
			// cannot reach port 80, rate limits); other names are scanners' guesses.
			level := slog.LevelDebug
			if slices.Contains(cfg.Domains, strings.ToLower(hello.ServerName)) {
				level = slog.LevelWarn
			}
			log.Log(hello.Context(), level, "no certificate for TLS handshake", "server_name", hello.ServerName, "err", err)
		}
		return cert, err
	}

	_, httpsPort, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", listenAddr, err)
	}
	return &Setup{
		TLSConfig:   tlsConfig,
		HTTPHandler: withoutPort(m.HTTPHandler(redirectToHTTPS(cfg.Domains, httpsPort))),
	}, nil
}

// observed tells observe the expiry of each certificate get serves, in the slot
// slotOf names, except the short-lived ones autocert answers TLS-ALPN-01
// challenges with.
func observed(get func(*tls.ClientHelloInfo) (*tls.Certificate, error), observe func(slot, name string, notAfter time.Time),
	slotOf func(*tls.ClientHelloInfo) string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if observe == nil {
		return get
	}
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert, err := get(hello)
		challenge := len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto
		if err == nil && cert.Leaf != nil && !challenge {
			name := cert.Leaf.Subject.CommonName
			if len(cert.Leaf.DNSNames) > 0 {
				name = cert.Leaf.DNSNames[0]
			}
			observe(slotOf(hello), name, cert.Leaf.NotAfter)
		}
		return cert, err
	}
}

// withoutPort removes the port from the request's Host before autocert sees it.
// autocert checks Host against its host policy, and a CA validating on any port
// but 80 sends one ("api.example.com:5002"), which the policy would refuse. The CA
// of a real deployment connects to port 80 and sends none, so this changes nothing
// there.
func withoutPort(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host, _, err := net.SplitHostPort(r.Host); err == nil {
			r = r.Clone(r.Context())
			r.Host = host
		}
		next.ServeHTTP(w, r)
	})
}

// redirectToHTTPS sends plain-HTTP requests for our domains to the same URL over
// HTTPS, on the API's port. Other hosts get no redirect: it would make this server
// an open redirector for whatever Host a client makes up.
func redirectToHTTPS(domains []string, httpsPort string) http.Handler {
	suffix := ":" + httpsPort
	if httpsPort == "443" {
		suffix = ""
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := strings.ToLower(r.Host)
		if !slices.Contains(domains, host) {
			http.Error(w, "unknown host", http.StatusMisdirectedRequest)
			return
		}
		// 308 keeps the method, and browsers remember it like a 301.
		http.Redirect(w, r, "https://"+host+suffix+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// clientTrusting returns an HTTP client for the ACME directory that trusts the
// system's roots and those in the PEM file rootsFile: a private ACME CA's.
func clientTrusting(rootsFile string) (*http.Client, error) {
	pem, err := os.ReadFile(rootsFile)
	if err != nil {
		return nil, fmt.Errorf("read ACME CA roots: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ACME CA roots %s: no PEM certificate in the file", rootsFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}

// ExpiryGauge registers backend_tls_certificate_expiry_timestamp_seconds on reg and
// returns what sets it, for Config.ObserveExpiry: an alert on it catches a renewal
// that keeps failing while there is still time to act. When a slot's certificate
// is replaced by one for another name, the old name's series goes (unless another
// slot still serves that name): a name no longer served must not keep its last
// expiry and page as it nears. In autocert mode a slot's name never changes; in
// file mode, new files for another name replace the old name.
func ExpiryGauge(reg prometheus.Registerer) func(slot, name string, notAfter time.Time) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "backend_tls_certificate_expiry_timestamp_seconds",
		Help: "When the certificate served for a name expires (Unix time), as of the last handshake; names no longer served are dropped."}, []string{"name"})
	reg.MustRegister(g)
	var mu sync.Mutex
	served := map[string]string{} // slot → the name of its certificate
	return func(slot, name string, notAfter time.Time) {
		mu.Lock()
		defer mu.Unlock()
		g.WithLabelValues(name).Set(float64(notAfter.Unix()))
		old, had := served[slot]
		served[slot] = name
		if had && old != name && !slices.Contains(slices.Collect(maps.Values(served)), old) {
			g.DeleteLabelValues(old)
		}
	}
}
