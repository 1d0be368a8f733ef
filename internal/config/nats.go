package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/annotated-data/pipeline/internal/dial"
	"github.com/annotated-data/pipeline/internal/natsconn"
)

// NATS is how a binary connects to NATS: the servers, who it is to them, and which
// certificates it trusts and presents. Every binary shares it: the webserver and
// the publisher always connect, the backend only when NATS_URL is set.
// Secrets given as files have been read into the connection's fields.
type NATS struct {
	natsconn.Config
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

// optionalVars are vars for a binary that can run without NATS: NATS_URL has
// no default, and usage says what needs it.
func (n *NATS) optionalVars(neededBy string) []Var {
	vars := n.vars()
	vars[0].Default = ""
	vars[0].Usage = "NATS server address (a comma-separated list for a cluster; no credentials in it); optional, needed by " + neededBy
	return vars
}

// Enabled reports whether a binary for which NATS is optional connects to it.
func (n NATS) Enabled() bool { return len(n.URLs) > 0 }

// checkOptional checks the settings of an optional connection: none of them may
// be given without NATS_URL, since they would silently do nothing.
func (n *NATS) checkOptional(c *checks) {
	if n.Enabled() {
		n.check(c)
		return
	}
	for _, v := range n.vars()[1:] {
		c.add(!c.set[v.Name], v.Name, "is set, but NATS_URL is not: set NATS_URL too, or remove %s", v.Name)
	}
}

func (n *NATS) check(c *checks) {
	c.urls("NATS_URL", n.URLs, "NATS_USER and NATS_PASSWORD, or NATS_TOKEN,", natsSchemes...)

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

// Explain turns a failure to connect into a message that names the variables
// that fix it; other errors pass through.
func (n NATS) Explain(err error) error {
	var (
		refused   *dial.RefusedError
		untrusted *dial.UntrustedError
		cert      *natsconn.ClientCertError
	)
	switch {
	case gaveUpWaiting(err, "NATS_STARTUP_TIMEOUT") != nil:
		return gaveUpWaiting(err, "NATS_STARTUP_TIMEOUT")
	case errors.As(err, &refused):
		at := "nats at " + refused.Addr
		switch refused.Why {
		case "expired":
			return fmt.Errorf("%s refused the credentials: they have expired (%s)", at, refused.Auth)
		case "revoked":
			return fmt.Errorf("%s refused the credentials: they were revoked (%s)", at, refused.Auth)
		}
		return fmt.Errorf("%s refused the credentials (%s): %s", at, refused.Why, n.credentialsHint())
	case errors.As(err, &untrusted) && untrusted.Problem == dial.UnknownAuthority:
		hint := "set NATS_CA_CERT to the CA that signed it"
		if n.CACertFile != "" {
			hint = fmt.Sprintf("the CA in NATS_CA_CERT (%s) did not sign it", n.CACertFile)
		}
		return fmt.Errorf("%v; %s", untrusted, hint)
	case errors.As(err, &cert):
		if cert.CertFile != "" {
			return fmt.Errorf("nats at %s refused the client certificate in NATS_TLS_CERT (%s): it must be signed by a CA the server trusts (%v)", cert.Addr, cert.CertFile, cert.Err)
		}
		return fmt.Errorf("nats at %s requires a client certificate (mutual TLS): set NATS_TLS_CERT and NATS_TLS_KEY (%v)", cert.Addr, cert.Err)
	case errors.Is(err, natsconn.ErrNoTLS):
		return fmt.Errorf("nats at %s does not offer TLS, but NATS_CA_CERT or NATS_TLS_CERT ask for it", strings.Join(n.URLs, ", "))
	}
	return err
}

// credentialsHint says which variables hold the credentials a server refused.
func (n NATS) credentialsHint() string {
	switch {
	case n.CredsFile != "":
		return fmt.Sprintf("check NATS_CREDS (%s): its user must be signed by an account the server trusts", n.CredsFile)
	case n.NKeySeedFile != "":
		return fmt.Sprintf("check NATS_NKEY_SEED (%s): the server must list the seed's public key", n.NKeySeedFile)
	case n.User != "":
		return fmt.Sprintf("check NATS_USER (%q) and NATS_PASSWORD", n.User)
	case n.Token != "":
		return "check NATS_TOKEN"
	}
	return "the server requires credentials: set NATS_CREDS, NATS_NKEY_SEED, NATS_USER and NATS_PASSWORD, or NATS_TOKEN"
}
