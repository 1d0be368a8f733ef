// Package dial is the plumbing every connection to a service shares: one backoff,
// one wait for a service that is not up yet, and one classification of the
// failures an operator must fix by hand (an untrusted certificate, refused
// credentials). Adapters return these typed errors; the configuration layer turns
// them into messages that name the variable that fixes them.
package dial

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"
)

// Backoff is exponential with full jitter: attempt n waits a random time up to
// Min·2ⁿ, capped at Max, and never less than Min/10. Many clients cut off together
// therefore do not come back in step.
type Backoff struct {
	Min, Max time.Duration
}

// Delay is the wait before attempt number attempt (0 for the first retry).
func (b Backoff) Delay(attempt int) time.Duration {
	ceiling := min(b.Max, b.Min<<min(attempt, 20))
	floor := b.Min / 10
	return floor + rand.N(max(ceiling-floor, 1))
}

// Sleep waits d, or less if ctx ends first; it reports whether the full d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// temporary marks a failure that time may fix: a service that is not reachable yet.
type temporary struct{ error }

func (e temporary) Unwrap() error { return e.error }

// Temporary marks err as worth waiting out (see Wait).
func Temporary(err error) error { return temporary{err} }

// IsTemporary reports whether err was marked Temporary.
func IsTemporary(err error) bool {
	var t temporary
	return errors.As(err, &t)
}

// GaveUpError is a service that stayed unreachable for all of Wait's patience.
type GaveUpError struct {
	Service string
	After   time.Duration
	Err     error // the last attempt's failure
}

func (e *GaveUpError) Error() string {
	return fmt.Sprintf("%v (gave up after %s)", e.Err, e.After.Round(time.Second))
}

func (e *GaveUpError) Unwrap() error { return e.Err }

// Wait calls attempt until it succeeds or fails with an error that is not
// Temporary, waiting interval between attempts, for at most patience. Services
// that start together (compose, Kubernetes) often start before the ones they
// need, so an unreachable service is waited for, and logged once when the wait
// begins and once when it ends; wrong credentials or certificates end the wait at
// once, since time cannot fix them.
func Wait(ctx context.Context, log *slog.Logger, service string, patience, interval time.Duration, attempt func(context.Context) error) error {
	began := time.Now()
	waiting := false
	for {
		err := attempt(ctx)
		if err == nil {
			if waiting {
				log.Info(service+" reachable", "after", time.Since(began).Round(time.Second).String())
			}
			return nil
		}
		if !IsTemporary(err) {
			return err
		}
		waited := time.Since(began)
		if waited >= patience {
			if !waiting {
				return err
			}
			return &GaveUpError{Service: service, After: waited, Err: err}
		}
		if !waiting {
			log.Warn(service+" not reachable yet; retrying", "err", err.Error(), "for", patience.String())
			waiting = true
		}
		if !Sleep(ctx, min(interval, patience-waited)) {
			return fmt.Errorf("waiting for %s: %w", service, ctx.Err())
		}
	}
}

// Problem is what is wrong with a certificate a server presented.
type Problem int

// Certificate problems.
const (
	UnknownAuthority    Problem = iota + 1 // signed by a CA the client does not trust
	WrongHost                              // does not name the host connected to
	InvalidCertificate                     // expired, not yet valid, wrong usage, …
	FingerprintMismatch                    // no certificate has the pinned fingerprint
	NotTLS                                 // the server does not speak TLS at all
)

// UntrustedError is a server whose certificate the client does not accept.
type UntrustedError struct {
	Service string // "elasticsearch", "nats"
	Addr    string
	Problem Problem
	Issuer  string // who signed the certificate, for UnknownAuthority
	Err     error
}

func (e *UntrustedError) Error() string {
	at := e.Service + " at " + e.Addr
	switch e.Problem {
	case UnknownAuthority:
		return fmt.Sprintf("%s is not trusted: its TLS certificate is signed by an unknown authority (%q)", at, e.Issuer)
	case WrongHost:
		return fmt.Sprintf("%s is not trusted: its TLS certificate does not name that host (%v); connect by a name the certificate holds", at, e.Err)
	case InvalidCertificate:
		return fmt.Sprintf("%s is not trusted: its TLS certificate is invalid (%v)", at, e.Err)
	case FingerprintMismatch:
		return fmt.Sprintf("%s is not trusted: no certificate it presented has the expected SHA-256 fingerprint", at)
	case NotTLS:
		return fmt.Sprintf("%s does not speak TLS", at)
	}
	return fmt.Sprintf("%s is not trusted: %v", at, e.Err)
}

func (e *UntrustedError) Unwrap() error { return e.Err }

// Untrusted classifies err as a certificate problem with the server at addr, or
// returns nil if it is none.
func Untrusted(service, addr string, err error) *UntrustedError {
	var (
		unknownCA x509.UnknownAuthorityError
		badHost   x509.HostnameError
		invalid   x509.CertificateInvalidError
		notTLS    tls.RecordHeaderError
	)
	e := &UntrustedError{Service: service, Addr: addr, Err: err}
	switch {
	// go-elasticsearch reports a pinned fingerprint that matched nothing with this
	// text only.
	case strings.Contains(err.Error(), "fingerprint mismatch"):
		e.Problem = FingerprintMismatch
	case errors.As(err, &unknownCA):
		e.Problem, e.Issuer = UnknownAuthority, "unknown issuer"
		if unknownCA.Cert != nil {
			e.Issuer = unknownCA.Cert.Issuer.String()
		}
	case errors.As(err, &badHost):
		e.Problem, e.Err = WrongHost, badHost
	case errors.As(err, &invalid):
		e.Problem, e.Err = InvalidCertificate, invalid
	case errors.As(err, &notTLS):
		e.Problem = NotTLS
	default:
		return nil
	}
	return e
}

// RefusedError is a server that refused the client's credentials or certificate.
type RefusedError struct {
	Service string
	Addr    string
	// Auth names the credentials offered, for messages: "user \"ingest\"",
	// "API key", "none"; never a secret.
	Auth string
	// Why is the server's reason: "401 Unauthorized", "authorization violation",
	// "expired", "revoked", "client certificate".
	Why string
	Err error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s at %s refused the credentials (%s, %s)", e.Service, e.Addr, e.Auth, e.Why)
}

func (e *RefusedError) Unwrap() error { return e.Err }
