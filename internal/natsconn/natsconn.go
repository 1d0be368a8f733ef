// Package natsconn connects a binary to NATS as its configuration says: the
// servers of a cluster, credentials (.creds, NKey seed, user and password, or
// token), and TLS with an optional client certificate. Once connected it reconnects
// forever; at start it names the problem when the servers refuse it.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/annotated-data/pipeline/internal/dial"
)

// Config says which servers to connect to, who the client is to them, and which
// certificates it trusts and presents.
type Config struct {
	URLs []string // default nats://127.0.0.1:4222; several for a cluster
	Name string   // the connection name servers show in their monitoring

	// Authentication: at most one of a .creds file (JWT and NKey seed), an NKey seed
	// file, a user and password, or a token. The .creds file is read at each
	// connect, so a rotated file is picked up on reconnect.
	CredsFile    string
	NKeySeedFile string
	User         string
	Password     string
	Token        string

	// TLS: the servers' certificates are checked against CACertFile (else the
	// system's roots); CertFile and KeyFile are the client certificate for mutual
	// TLS.
	CACertFile string
	CertFile   string
	KeyFile    string

	// StartupTimeout is how long Connect waits for unreachable servers (0: not at
	// all).
	StartupTimeout time.Duration
}

// retryInterval spaces the connection attempts at start while no server answers.
const retryInterval = time.Second

// reconnectBackoff spaces reconnects after every server of the pool was tried once.
var reconnectBackoff = dial.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// Connect connects to the servers in cfg. Refused credentials
// (*dial.RefusedError), untrusted certificates (*dial.UntrustedError) and a
// refused client certificate (*ClientCertError) fail at once: retrying cannot fix
// them. Unreachable servers are waited for up to cfg.StartupTimeout
// (*dial.GaveUpError after that).
//
// The connection then reconnects forever, with backoff, and logs each disconnect
// and reconnect once.
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*nats.Conn, error) {
	if len(cfg.URLs) == 0 {
		cfg.URLs = []string{nats.DefaultURL}
	}
	opts, err := options(cfg, log)
	if err != nil {
		return nil, err
	}
	var nc *nats.Conn
	err = dial.Wait(ctx, log, "nats", cfg.StartupTimeout, retryInterval, func(context.Context) error {
		var err error
		nc, err = nats.Connect(strings.Join(cfg.URLs, ","), opts...)
		return explain(err, cfg)
	})
	if err != nil {
		return nil, err
	}
	_, tlsErr := nc.TLSConnectionState()
	log.Info("nats connected", "server", nc.ConnectedUrlRedacted(), "auth", authMethod(cfg), "tls", tlsErr == nil)
	return nc, nil
}

// options turns cfg into nats.go's own options.
func options(cfg Config, log *slog.Logger) ([]nats.Option, error) {
	asyncErrs := &onceEach{}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		// Connect handles the start itself, to tell refused from unreachable.
		nats.RetryOnFailedConnect(false),
		nats.CustomReconnectDelay(reconnectBackoff.Delay),
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
			return nil, fmt.Errorf("nkey seed %s: %w", cfg.NKeySeedFile, err)
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

// ClientCertError is a server's refusal of mutual TLS: it wants a client
// certificate and got none it trusts. Go's client sends its certificate only if a
// CA the server named signed it, so without one the server trusts it sends none,
// and the server reports a missing one.
type ClientCertError struct {
	Addr     string
	CertFile string // the certificate offered; empty if none was configured
	Err      error
}

func (e *ClientCertError) Error() string {
	if e.CertFile != "" {
		return fmt.Sprintf("nats at %s refused the client certificate %s: it must be signed by a CA the server trusts (%v)", e.Addr, e.CertFile, e.Err)
	}
	return fmt.Sprintf("nats at %s requires a client certificate (mutual TLS) (%v)", e.Addr, e.Err)
}

func (e *ClientCertError) Unwrap() error { return e.Err }

// ErrNoTLS is a server that does not offer TLS to a client configured for it.
var ErrNoTLS = errors.New("the server does not offer TLS")

// explain classifies a failed connect: nil stays nil, unreachable servers are
// dial.Temporary, the rest are the typed errors Connect documents.
func explain(err error, cfg Config) error {
	if err == nil {
		return nil
	}
	where := strings.Join(cfg.URLs, ", ")
	refused := func(why string) error {
		return &dial.RefusedError{Service: "nats", Addr: where, Auth: authMethod(cfg), Why: why, Err: err}
	}
	var opErr *net.OpError
	switch {
	case errors.Is(err, nats.ErrAuthorization):
		return refused("authorization violation")
	case errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAccountAuthExpired):
		return refused("expired")
	case errors.Is(err, nats.ErrAuthRevoked):
		return refused("revoked")
	case dial.Untrusted("nats", where, err) != nil:
		return dial.Untrusted("nats", where, err)
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// A TLS alert from the server: it did not accept our side of the handshake.
		if cfg.CertFile == "" && !strings.Contains(opErr.Err.Error(), "certificate required") {
			return fmt.Errorf("nats at %s refused the TLS handshake: %v", where, opErr.Err)
		}
		return &ClientCertError{Addr: where, CertFile: cfg.CertFile, Err: opErr.Err}
	case errors.Is(err, nats.ErrTLS) && strings.Contains(err.Error(), "closed by remote after TLS handshake"):
		// With TLS 1.3 the server checks the client's certificate after the client
		// has finished its handshake; depending on timing, its refusal shows as this
		// hang-up instead of an alert.
		return &ClientCertError{Addr: where, CertFile: cfg.CertFile, Err: errors.New("connection closed right after the handshake")}
	case errors.Is(err, nats.ErrTLS):
		return fmt.Errorf("TLS with nats at %s failed: %w", where, err)
	case errors.Is(err, nats.ErrSecureConnWanted):
		return fmt.Errorf("nats at %s: %w", where, ErrNoTLS)
	case errors.Is(err, nats.ErrNoServers), errors.As(err, &opErr), errors.Is(err, nats.ErrTimeout), errors.Is(err, io.EOF):
		return dial.Temporary(fmt.Errorf("nats unreachable at %s: %w", where, err))
	}
	return fmt.Errorf("connect to nats at %s: %w", where, err)
}

// authMethod names how the connection authenticates, for logs: never a secret.
func authMethod(cfg Config) string {
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
