package config

import (
	"net/url"
	"strings"
	"time"
)

// NATS is how a binary connects to NATS: the servers, who it is to them, and which
// certificates it trusts and presents. The webserver and the publisher share it.
type NATS struct {
	URLs []string

	// Authentication: at most one of a .creds file (JWT and NKey seed), an NKey seed,
	// a user and password, or a token. Secrets given as files have been read into
	// these fields; the .creds and seed files are read by the client at each
	// connect, so a rotated file is picked up on reconnect.
	CredsFile    string
	NKeySeedFile string
	User         string
	Password     string
	Token        string

	// TLS: the server's certificate is checked against CACertFile (else the
	// system's roots); CertFile and KeyFile are the client certificate for mutual TLS.
	CACertFile string
	CertFile   string
	KeyFile    string

	StartupTimeout time.Duration // how long to wait at start for unreachable servers

	passwordFile, tokenFile string
}

// natsSchemes are the URL schemes nats.go connects with.
var natsSchemes = []string{"nats", "tls", "ws", "wss"}

func (n *NATS) vars() []Var {
	return []Var{
		{Name: "NATS_URL", Default: "nats://127.0.0.1:4222", Usage: "NATS server address; a comma-separated list for a cluster (reconnects forever); no credentials in it", target: &n.URLs},
		{Name: "NATS_CREDS", Usage: "credentials file (.creds: user JWT and NKey seed) for a server in operator mode", target: &n.CredsFile},
		{Name: "NATS_NKEY_SEED", Usage: "file holding an NKey user seed (SU...)", target: &n.NKeySeedFile},
		{Name: "NATS_USER", Usage: "user name (with NATS_PASSWORD)", target: &n.User},
		{Name: "NATS_PASSWORD", Secret: true, Usage: "password of NATS_USER", target: &n.Password},
		{Name: "NATS_PASSWORD_FILE", Usage: "file holding NATS_PASSWORD (a mounted secret), read at start", target: &n.passwordFile},
		{Name: "NATS_TOKEN", Secret: true, Usage: "authentication token", target: &n.Token},
		{Name: "NATS_TOKEN_FILE", Usage: "file holding NATS_TOKEN (a mounted secret), read at start", target: &n.tokenFile},
		{Name: "NATS_CA_CERT", Usage: "PEM file of the CA that signed the servers' certificates; setting it requires TLS; default: the system's roots", target: &n.CACertFile},
		{Name: "NATS_TLS_CERT", Usage: "PEM client certificate (chain), for servers that require mutual TLS", target: &n.CertFile},
		{Name: "NATS_TLS_KEY", Usage: "PEM private key of NATS_TLS_CERT", target: &n.KeyFile},
		{Name: "NATS_STARTUP_TIMEOUT", Default: "1m", Usage: "how long to wait at start for unreachable servers (0s: not at all); refused credentials or certificates stop the start at once", target: &n.StartupTimeout},
	}
}

func (n *NATS) check(c *checks) {
	var plain []string
	for _, raw := range n.URLs {
		// Credentials in an address end up in process lists and error messages;
		// they have variables of their own.
		if u, err := url.Parse(raw); err == nil && u.User != nil {
			c.add(false, "NATS_URL", "%s holds credentials: set NATS_USER and NATS_PASSWORD, or NATS_TOKEN, instead", u.Redacted())
			continue
		}
		plain = append(plain, raw)
	}
	if len(plain) > 0 || len(n.URLs) == 0 {
		c.urls("NATS_URL", plain, natsSchemes...)
	}

	c.secretFromFile("NATS_PASSWORD", &n.Password, n.passwordFile)
	c.secretFromFile("NATS_TOKEN", &n.Token, n.tokenFile)
	c.add(n.User == "" || n.Password != "", "NATS_PASSWORD", "is required with NATS_USER (or NATS_PASSWORD_FILE)")
	c.add(n.Password == "" || n.User != "", "NATS_USER", "is required with NATS_PASSWORD")
	var methods []string
	for _, m := range []struct {
		name string
		set  bool
	}{
		{"NATS_CREDS", n.CredsFile != ""},
		{"NATS_NKEY_SEED", n.NKeySeedFile != ""},
		{"NATS_USER", n.User != ""},
		{"NATS_TOKEN", n.Token != ""},
	} {
		if m.set {
			methods = append(methods, m.name)
		}
	}
	if n := len(methods); n > 1 {
		all := "both"
		if n > 2 {
			all = "all"
		}
		c.add(false, methods[n-1], "%s and %s are %s set: authenticate with one of them", strings.Join(methods[:n-1], ", "), methods[n-1], all)
	}
	c.readable("NATS_CREDS", n.CredsFile)
	c.readable("NATS_NKEY_SEED", n.NKeySeedFile)

	c.certificates("NATS_CA_CERT", n.CACertFile)
	c.keyPair("NATS_TLS_CERT", n.CertFile, "NATS_TLS_KEY", n.KeyFile)
	c.add(n.StartupTimeout >= 0, "NATS_STARTUP_TIMEOUT", "must not be negative, got %s", n.StartupTimeout)
}

// NATSVars declares the variables of a binary that only connects to NATS (the
// publisher); cfg receives the values.
func NATSVars(cfg *NATS) []Var { return cfg.vars() }

// LoadNATS reads and validates the NATS connection settings alone.
func LoadNATS(getenv func(string) string) (NATS, error) {
	var cfg NATS
	c := load(getenv, NATSVars(&cfg))
	cfg.check(c)
	return cfg, c.err()
}
