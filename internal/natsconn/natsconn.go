// Package natsconn connects a binary to NATS as its configuration says: the
// servers of a cluster, credentials (.creds, NKey seed, user and password, or
// token), and TLS with an optional client certificate. Once connected it reconnects
// forever; at start it names the problem when the servers refuse it.
package natsconn

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/annotated-data/pipeline/internal/config"
)

// retryInterval spaces the connection attempts at start while no server answers.
const retryInterval = time.Second

// Connect connects to the servers in cfg under name, the connection name servers
// show in their monitoring. Refused credentials and untrusted certificates fail at
// once with an error naming the problem: retrying cannot fix them. Unreachable
// servers are retried for cfg.StartupTimeout, logged once, because services that
// start together (compose, Kubernetes) often start before NATS does.
//
// The connection then reconnects forever, with backoff, and logs each disconnect
// and reconnect once.
func Connect(ctx context.Context, cfg config.NATS, name string, log *slog.Logger) (*nats.Conn, error) {
	opts, err := options(cfg, name, log)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	waiting := false
	for {
		nc, err := nats.Connect(strings.Join(cfg.URLs, ","), opts...)
		if err == nil {
			if waiting {
				log.Info("nats reachable", "after", time.Since(began).Round(time.Second).String())
			}
			_, tlsErr := nc.TLSConnectionState()
			log.Info("nats connected", "server", nc.ConnectedUrlRedacted(), "auth", authMethod(cfg), "tls", tlsErr == nil)
			return nc, nil
		}
		err = explain(err, cfg)
		var unreachable unreachableError
		if !errors.As(err, &unreachable) || time.Since(began) >= cfg.StartupTimeout {
			if waiting && errors.As(err, &unreachable) {
				return nil, fmt.Errorf("%w (gave up after %s, NATS_STARTUP_TIMEOUT)", err, time.Since(began).Round(time.Second))
			}
			return nil, err
		}
		if !waiting {
			log.Warn("nats not reachable yet; retrying", "err", err.Error(), "for", cfg.StartupTimeout.String())
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for nats: %w", ctx.Err())
		case <-time.After(min(retryInterval, cfg.StartupTimeout-time.Since(began))):
		}
	}
}

// options turns cfg into nats.go's own options.
func options(cfg config.NATS, name string, log *slog.Logger) ([]nats.Option, error) {
	asyncErrs := &onceEach{}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		// Connect handles the start itself, to tell refused from unreachable.
		nats.RetryOnFailedConnect(false),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: closed on purpose, at shutdown
				log.Warn("nats disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			asyncErrs.reset()
			log.Info("nats reconnected", "server", c.ConnectedUrlRedacted())
		}),
		// Refused credentials while reconnecting (a rotated password), permission
		// violations, slow consumers: each kind once, not once per attempt.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if asyncErrs.first(err.Error()) {
				subject := ""
				if sub != nil {
					subject = sub.Subject
				}
				log.Warn("nats error", "err", err, "subject", subject)
			}
		}),
	}
	switch {
	case cfg.CredsFile != "":
		// Read at each connect, so a renewed file is used on the next reconnect.
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	case cfg.NKeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY_SEED %s: %w", cfg.NKeySeedFile, err)
		}
		opts = append(opts, opt)
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.CACertFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CACertFile))
	}
	if cfg.CertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	return opts, nil
}

// reconnectDelay is the pause after every server of the pool was tried once:
// doubling from 100ms to 5s, with jitter so that many clients cut off together do
// not come back in step.
func reconnectDelay(attempts int) time.Duration {
	d := min(100*time.Millisecond<<min(attempts, 6), 5*time.Second)
	return d + rand.N(d/5+1)
}

// onceEach remembers which messages were logged since the last reset.
type onceEach struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (o *onceEach) first(msg string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen[msg] {
		return false
	}
	if o.seen == nil {
		o.seen = map[string]bool{}
	}
	o.seen[msg] = true
	return true
}

func (o *onceEach) reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = nil
}

// unreachableError marks a start-up problem that time may fix: no server answered.
type unreachableError struct{ error }

func (e unreachableError) Unwrap() error { return e.error }

// explain names the problem behind a failed connect, by the variables that fix it.
func explain(err error, cfg config.NATS) error {
	where := strings.Join(cfg.URLs, ", ")
	var (
		unknownCA x509.UnknownAuthorityError
		badHost   x509.HostnameError
		invalid   x509.CertificateInvalidError
		opErr     *net.OpError
	)
	switch {
	case errors.Is(err, nats.ErrAuthorization):
		return fmt.Errorf("nats at %s refused the credentials (authorization violation): %s", where, credentialsHint(cfg))
	case errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAccountAuthExpired):
		return fmt.Errorf("nats at %s refused the credentials: they have expired (%s)", where, authMethod(cfg))
	case errors.Is(err, nats.ErrAuthRevoked):
		return fmt.Errorf("nats at %s refused the credentials: they were revoked (%s)", where, authMethod(cfg))
	case errors.As(err, &unknownCA):
		hint := "set NATS_CA_CERT to the CA that signed it"
		if cfg.CACertFile != "" {
			hint = fmt.Sprintf("the CA in NATS_CA_CERT (%s) did not sign it", cfg.CACertFile)
		}
		issuer := "unknown issuer"
		if unknownCA.Cert != nil {
			issuer = unknownCA.Cert.Issuer.String()
		}
		return fmt.Errorf("nats at %s is not trusted: its TLS certificate is signed by an unknown authority (%q); %s", where, issuer, hint)
	case errors.As(err, &badHost):
		return fmt.Errorf("nats at %s is not trusted: its TLS certificate does not name the host connected to (%v); connect by a name the certificate holds", where, badHost)
	case errors.As(err, &invalid):
		return fmt.Errorf("nats at %s is not trusted: its TLS certificate is invalid (%v)", where, invalid)
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// A TLS alert from the server: it did not accept our side of the handshake.
		if cfg.CertFile == "" && !strings.Contains(opErr.Err.Error(), "certificate required") {
			return fmt.Errorf("nats at %s refused the TLS handshake: %v", where, opErr.Err)
		}
		return clientCertificateRefused(where, cfg, opErr.Err)
	case errors.Is(err, nats.ErrTLS) && strings.Contains(err.Error(), "closed by remote after TLS handshake"):
		// With TLS 1.3 the server checks the client's certificate after the client
		// has finished its handshake; depending on timing, its refusal shows as this
		// hang-up instead of an alert.
		return clientCertificateRefused(where, cfg, errors.New("connection closed right after the handshake"))
	case errors.Is(err, nats.ErrTLS):
		return fmt.Errorf("TLS with nats at %s failed: %w", where, err)
	case errors.Is(err, nats.ErrSecureConnWanted):
		return fmt.Errorf("nats at %s does not offer TLS, but NATS_CA_CERT or NATS_TLS_CERT ask for it", where)
	case errors.Is(err, nats.ErrNoServers), errors.As(err, &opErr), errors.Is(err, nats.ErrTimeout), errors.Is(err, io.EOF):
		return unreachableError{fmt.Errorf("nats unreachable at %s: %w", where, err)}
	}
	return fmt.Errorf("connect to nats at %s: %w", where, err)
}

// clientCertificateRefused explains a server's refusal of mutual TLS. Go's client
// sends its certificate only if a CA the server named signed it, so without one
// that the server trusts it sends none, and the server reports a missing one.
func clientCertificateRefused(where string, cfg config.NATS, cause error) error {
	if cfg.CertFile != "" {
		return fmt.Errorf("nats at %s refused the client certificate in NATS_TLS_CERT (%s): it must be signed by a CA the server trusts (%v)", where, cfg.CertFile, cause)
	}
	return fmt.Errorf("nats at %s requires a client certificate (mutual TLS): set NATS_TLS_CERT and NATS_TLS_KEY (%v)", where, cause)
}

// credentialsHint says which variables hold the credentials a server refused.
func credentialsHint(cfg config.NATS) string {
	switch {
	case cfg.CredsFile != "":
		return fmt.Sprintf("check NATS_CREDS (%s): its user must be signed by an account the server trusts", cfg.CredsFile)
	case cfg.NKeySeedFile != "":
		return fmt.Sprintf("check NATS_NKEY_SEED (%s): the server must list the seed's public key", cfg.NKeySeedFile)
	case cfg.User != "":
		return fmt.Sprintf("check NATS_USER (%q) and NATS_PASSWORD", cfg.User)
	case cfg.Token != "":
		return "check NATS_TOKEN"
	}
	return "the server requires credentials: set NATS_CREDS, NATS_NKEY_SEED, NATS_USER and NATS_PASSWORD, or NATS_TOKEN"
}

// authMethod names how the connection authenticates, for logs: never a secret.
func authMethod(cfg config.NATS) string {
	switch {
	case cfg.CredsFile != "":
		return "creds file " + cfg.CredsFile
	case cfg.NKeySeedFile != "":
		return "nkey seed file " + cfg.NKeySeedFile
	case cfg.User != "":
		return "user " + cfg.User
	case cfg.Token != "":
		return "token"
	}
	return "none"
}
