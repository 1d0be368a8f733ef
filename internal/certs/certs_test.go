package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestPlainHTTPIsRedirectedToHTTPSOnlyForOurDomains(t *testing.T) {
	tests := []struct {
		name, httpsPort, host, target string
		status                        int
		location                      string
	}{
		{"our domain, API on 443", "443", "api.example.com", "/getJsonStream?start_date=2023-03-09&end_date=2023-03-10",
			http.StatusPermanentRedirect, "https://api.example.com/getJsonStream?start_date=2023-03-09&end_date=2023-03-10"},
		{"our domain, API on another port", "5000", "api.example.com", "/healthz", http.StatusPermanentRedirect, "https://api.example.com:5000/healthz"},
		{"our domain in capitals", "443", "API.example.com", "/", http.StatusPermanentRedirect, "https://api.example.com/"},
		{"another host", "443", "evil.example", "/", http.StatusMisdirectedRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, tt.target, nil)
			req.Host = tt.host
			redirectToHTTPS([]string{"api.example.com"}, tt.httpsPort).ServeHTTP(rec, req)
			if rec.Code != tt.status || rec.Header().Get("Location") != tt.location {
				t.Errorf("got %d to %q, want %d to %q", rec.Code, rec.Header().Get("Location"), tt.status, tt.location)
			}
		})
	}
}

func TestTheChallengeHandlerSeesTheHostWithoutItsPort(t *testing.T) {
	var seen string
	h := withoutPort(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { seen = r.Host }))
	for host, want := range map[string]string{"test.example:5002": "test.example", "test.example": "test.example", "[::1]:80": "::1"} {
		req := httptest.NewRequest(http.MethodGet, "/.well-known/acme-challenge/x", nil)
		req.Host = host
		h.ServeHTTP(httptest.NewRecorder(), req)
		if seen != want {
			t.Errorf("Host %q reached the handler as %q, want %q", host, seen, want)
		}
	}
}

// writePair writes a self-signed certificate with the given serial and its key.
func writePair(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	writePairFor(t, certFile, keyFile, serial, "localhost")
}

// writePairFor writes a self-signed certificate for name, and its key.
func writePairFor(t *testing.T, certFile, keyFile string, serial int64, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{name}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	if certFile != "" {
		replace(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	if keyFile != "" {
		replace(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	}
}

func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func servedSerial(t *testing.T, fc *fileCert) int64 {
	t.Helper()
	cert, err := fc.GetCertificate(&tls.ClientHelloInfo{ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	return cert.Leaf.SerialNumber.Int64()
}

func TestFileModeKeepsTheLastGoodCertificateUntilANewPairLoads(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, certFile, keyFile, 1)
	fc, err := newFileCert(certFile, keyFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, fc); got != 1 {
		t.Fatalf("serving %d, want 1", got)
	}

	writePair(t, certFile, "", 2) // the certificate, not yet its key
	if got := servedSerial(t, fc); got != 1 {
		t.Errorf("with a mismatched pair: serving %d, want still 1", got)
	}
	os.Remove(keyFile) // a moment with no key at all
	if got := servedSerial(t, fc); got != 1 {
		t.Errorf("with the key missing: serving %d, want still 1", got)
	}
	writePair(t, certFile, keyFile, 3)
	if got := servedSerial(t, fc); got != 3 {
		t.Errorf("after a complete renewal: serving %d, want 3", got)
	}
}

func TestFileModeRefusesToStartWithoutAUsablePair(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_, err := New(Config{Mode: File, CertFile: certFile, KeyFile: keyFile}, ":443", slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "cert.pem") {
		t.Errorf("New with no files: %v, want an error naming cert.pem", err)
	}
	writePair(t, certFile, "", 1)
	writePair(t, "", keyFile, 2)
	if _, err := New(Config{Mode: File, CertFile: certFile, KeyFile: keyFile}, ":443", slog.New(slog.DiscardHandler)); err == nil {
		t.Error("New with a mismatched pair succeeded")
	}
}

func TestTLSModesSetTheirServers(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	off, err := New(Config{Mode: Off}, ":5000", log)
	if err != nil || off.TLSConfig != nil || off.HTTPHandler != nil {
		t.Errorf("off: %+v, %v; want neither TLS nor an HTTP side", off, err)
	}

	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, certFile, keyFile, 1)
	file, err := New(Config{Mode: File, CertFile: certFile, KeyFile: keyFile}, ":443", log)
	if err != nil || file.TLSConfig == nil || file.TLSConfig.MinVersion != tls.VersionTLS12 || file.HTTPHandler != nil {
		t.Errorf("file: %+v, %v; want TLS 1.2 and up, no HTTP side", file, err)
	}

	auto, err := New(Config{Mode: Autocert, Domains: []string{"api.example.com"}, CacheDir: dir,
		ACMEDirectoryURL: LetsEncryptDirectory, ACMEHTTPAddr: ":80", ACMECARoots: certFile}, ":443", log)
	if err != nil || auto.TLSConfig == nil || auto.TLSConfig.MinVersion != tls.VersionTLS12 || auto.HTTPHandler == nil {
		t.Errorf("autocert: %+v, %v; want TLS 1.2 and up and an HTTP side", auto, err)
	}

	_, err = New(Config{Mode: Autocert, Domains: []string{"api.example.com"}, CacheDir: dir,
		ACMEDirectoryURL: LetsEncryptDirectory, ACMEHTTPAddr: ":80", ACMECARoots: keyFile}, ":443", log)
	if err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("autocert with a key as ACME_CA_ROOTS: %v, want an error", err)
	}
}

func TestTLS12IsOfferedWithAEADSuitesOnly(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, certFile, keyFile, 1)
	file, err := New(Config{Mode: File, CertFile: certFile, KeyFile: keyFile}, ":443", log)
	if err != nil {
		t.Fatal(err)
	}
	auto, err := New(Config{Mode: Autocert, Domains: []string{"api.example.com"}, CacheDir: dir,
		ACMEDirectoryURL: LetsEncryptDirectory, ACMEHTTPAddr: ":80"}, ":443", log)
	if err != nil {
		t.Fatal(err)
	}

	// What a TLS 1.2 client gets, in a real handshake, offering one suite at a time.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", file.TLSConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	for _, suite := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if !slices.Contains(suite.SupportedVersions, tls.VersionTLS12) {
			continue
		}
		aead := strings.Contains(suite.Name, "_GCM_") || strings.Contains(suite.Name, "CHACHA20")
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite.ID}})
		if err == nil {
			c.Close()
		}
		if ecdsa := strings.Contains(suite.Name, "ECDHE_ECDSA"); ecdsa && aead && err != nil {
			t.Errorf("TLS 1.2 with %s: %v, want it accepted", suite.Name, err)
		}
		if !aead && err == nil {
			t.Errorf("TLS 1.2 with %s: accepted, want only AEAD suites", suite.Name)
		}
	}

	// autocert mode cannot handshake without a CA; it must use the same list.
	for _, id := range auto.TLSConfig.CipherSuites {
		if name := tls.CipherSuiteName(id); !strings.Contains(name, "_GCM_") && !strings.Contains(name, "CHACHA20") {
			t.Errorf("autocert offers %s", name)
		}
	}
	if auto.TLSConfig.CipherSuites == nil {
		t.Error("autocert offers Go's default suites, CBC ones among them")
	}
}

func TestTheExpiryOfTheServedCertificateIsObserved(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, certFile, keyFile, 1)
	var name string
	var notAfter time.Time
	setup, err := New(Config{Mode: File, CertFile: certFile, KeyFile: keyFile,
		ObserveExpiry: func(_, n string, t time.Time) { name, notAfter = n, t }}, ":443", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := setup.TLSConfig.GetCertificate(&tls.ClientHelloInfo{ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if name != "localhost" || !notAfter.Equal(cert.Leaf.NotAfter) {
		t.Errorf("observed %q expiring %s, want localhost expiring %s", name, notAfter, cert.Leaf.NotAfter)
	}
}

// expiries is what the expiry gauge exports: the expiry of each name.
func expiries(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return out
}

// A name no longer served must not keep the expiry of its last certificate: it
// would page as that date nears, for a certificate nobody is served any more.
func TestFilesForAnotherNameDropTheOldNamesExpiry(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePairFor(t, certFile, keyFile, 1, "old.example.com")
	reg := prometheus.NewRegistry()
	setup, err := New(Config{Mode: File, CertFile: certFile, KeyFile: keyFile, ObserveExpiry: ExpiryGauge(reg)}, ":443", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	handshake := func() *tls.Certificate {
		t.Helper()
		cert, err := setup.TLSConfig.GetCertificate(&tls.ClientHelloInfo{ServerName: "old.example.com"})
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	old := handshake()
	if got := expiries(t, reg); fmt.Sprint(got) != fmt.Sprint(map[string]float64{"old.example.com": float64(old.Leaf.NotAfter.Unix())}) {
		t.Errorf("after the first handshake: %v, want old.example.com only", got)
	}

	writePairFor(t, certFile, keyFile, 2, "new.example.com")
	renewed := handshake()
	want := map[string]float64{"new.example.com": float64(renewed.Leaf.NotAfter.Unix())}
	if got := expiries(t, reg); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after the files changed to another name: %v, want %v", got, want)
	}
}

// In autocert mode each host name has its certificate: renewing one leaves the
// others' expiry as it was.
func TestRenewingOneNamesCertificateLeavesTheOthers(t *testing.T) {
	reg := prometheus.NewRegistry()
	observe := ExpiryGauge(reg)
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	observe("a.example.com", "a.example.com", day)
	observe("b.example.com", "b.example.com", day)
	observe("a.example.com", "a.example.com", day.AddDate(0, 3, 0))
	want := map[string]float64{"a.example.com": float64(day.AddDate(0, 3, 0).Unix()), "b.example.com": float64(day.Unix())}
	if got := expiries(t, reg); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after a renewal of a: %v, want %v", got, want)
	}
	// Two slots on one name: the name stays while one of them still serves it.
	observe("c", "shared.example.com", day)
	observe("d", "shared.example.com", day)
	observe("c", "c.example.com", day)
	if got := expiries(t, reg); got["shared.example.com"] == 0 {
		t.Errorf("shared.example.com dropped while slot d still serves it: %v", got)
	}
}
