package certs

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// fileCert serves the certificate in a pair of PEM files, and reads them again when
// either changes, so that a certificate renewed by another tool (certbot, a secret
// mounted by an orchestrator) takes effect without a restart.
//
// Each handshake compares the files' identity, size and modification time with the
// ones last loaded: two stat calls, far cheaper than the handshake itself, and no
// watcher goroutine to own.
type fileCert struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	loaded  [2]os.FileInfo // of certFile and keyFile, when cert was read
	refused [2]os.FileInfo // the last versions that did not load, so each is logged once
}

func newFileCert(certFile, keyFile string, log *slog.Logger) (*fileCert, error) {
	fc := &fileCert{certFile: certFile, keyFile: keyFile, log: log}
	infos, err := fc.stat()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	fc.cert, fc.loaded = &cert, infos
	log.Info("TLS certificate loaded", "file", certFile, "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	return fc, nil
}

// GetCertificate is a tls.Config.GetCertificate.
func (fc *fileCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	infos, err := fc.stat()
	if err != nil || same(infos, fc.loaded) || same(infos, fc.refused) {
		// A file missing for a moment (being replaced) or a pair that did not load:
		// keep serving the last good certificate.
		return fc.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(fc.certFile, fc.keyFile)
	if err != nil {
		// Often the certificate is replaced a moment before its key: the next
		// handshake after the key arrives loads both.
		fc.refused = infos
		fc.log.Warn("TLS certificate files changed but do not load; serving the previous certificate", "file", fc.certFile, "err", err)
		return fc.cert, nil
	}
	fc.cert, fc.loaded = &cert, infos
	fc.log.Info("TLS certificate reloaded", "file", fc.certFile, "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	return fc.cert, nil
}

func (fc *fileCert) stat() ([2]os.FileInfo, error) {
	var infos [2]os.FileInfo
	for i, name := range []string{fc.certFile, fc.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return infos, fmt.Errorf("TLS certificate: %w", err)
		}
		infos[i] = fi
	}
	return infos, nil
}

// same reports whether a and b describe the same versions of both files.
func same(a, b [2]os.FileInfo) bool {
	for i := range a {
		if a[i] == nil || b[i] == nil || !os.SameFile(a[i], b[i]) ||
			a[i].Size() != b[i].Size() || !a[i].ModTime().Equal(b[i].ModTime()) {
			return false
		}
	}
	return true
}
