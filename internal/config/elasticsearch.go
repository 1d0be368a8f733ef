package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/annotated-data/pipeline/internal/dial"
	"github.com/annotated-data/pipeline/internal/store"
)

// Elasticsearch is how both binaries reach the store: where it is, who they are to
// it, and which certificate they trust. Secrets given as files have been read into
// the store's fields.
type Elasticsearch struct {
	store.Config
	passwordFile, apiKeyFile string
}

func (e *Elasticsearch) vars() []Var {
	return []Var{
		{Name: "ELASTICSEARCH_URL", Default: "http://127.0.0.1:9200", Usage: "Elasticsearch address; a comma-separated list for a cluster (requests are spread over them and retried on another); no credentials in it", target: &e.Addresses},
		{Name: "ELASTIC_CLOUD_ID", Usage: "Elastic Cloud deployment's Cloud ID, instead of ELASTICSEARCH_URL", target: &e.CloudID},
		{Name: "ES_INDEX_PREFIX", Default: "annotations", Usage: "documents live in indices named <prefix>-YYYY.MM.DD", target: &e.IndexPrefix},
		{Name: "ELASTICSEARCH_USERNAME", Usage: "user for HTTP basic authentication (with ELASTICSEARCH_PASSWORD)", target: &e.Username},
		{Name: "ELASTICSEARCH_PASSWORD", Secret: true, Usage: "password of ELASTICSEARCH_USERNAME", target: &e.Password},
		{Name: "ELASTICSEARCH_PASSWORD_FILE", Usage: "file holding ELASTICSEARCH_PASSWORD (a mounted secret), read at start", target: &e.passwordFile},
		{Name: "ELASTICSEARCH_API_KEY", Secret: true, Usage: "API key, the base64 \"encoded\" value Elasticsearch returns; instead of username and password", target: &e.APIKey},
		{Name: "ELASTICSEARCH_API_KEY_FILE", Usage: "file holding ELASTICSEARCH_API_KEY (a mounted secret), read at start", target: &e.apiKeyFile},
		{Name: "ELASTICSEARCH_CA_CERT", Usage: "PEM file of the CA that signed Elasticsearch's HTTP certificate (config/certs/http_ca.crt on Elasticsearch 8); default: the system's roots", target: &e.CACertFile},
		{Name: "ELASTICSEARCH_CA_FINGERPRINT", Usage: "SHA-256 fingerprint of the CA or HTTP certificate, hex with or without colons (as Elasticsearch prints it at first start); instead of ELASTICSEARCH_CA_CERT", target: &e.CAFingerprint},
		{Name: "ELASTICSEARCH_INSECURE_SKIP_VERIFY", Default: "false", Usage: "true: accept any certificate, which lets anyone on the path read the traffic and the credentials (tests only; logged as a warning)", target: &e.InsecureSkipVerify},
		{Name: "ELASTICSEARCH_COMPRESS", Default: "false", Usage: "true: gzip request bodies, making bulks about six times smaller for some CPU; for slow or metered links", target: &e.Compress},
		{Name: "ELASTICSEARCH_STARTUP_TIMEOUT", Default: "1m", Usage: "how long to wait at start for an unreachable Elasticsearch (0s: not at all); bad credentials or certificates stop the start at once", target: &e.StartupTimeout},
	}
}

func (e *Elasticsearch) check(c *checks) {
	if e.CloudID != "" {
		c.add(validCloudID(e.CloudID), "ELASTIC_CLOUD_ID", "is not a Cloud ID like <deployment name>:<base64>, as the Elastic Cloud console shows it")
		c.add(!c.set["ELASTICSEARCH_URL"], "ELASTICSEARCH_URL", "is set, and so is ELASTIC_CLOUD_ID: set one of them")
		e.Addresses = nil
	} else {
		c.urls("ELASTICSEARCH_URL", e.Addresses, "ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD (or ELASTICSEARCH_API_KEY)", "http", "https")
	}
	c.add(validIndexPrefix(e.IndexPrefix), "ES_INDEX_PREFIX", "%q must be lowercase letters, digits, '-' or '_', not starting with '-' or '_'", e.IndexPrefix)

	c.secretFromFile("ELASTICSEARCH_PASSWORD", &e.Password, e.passwordFile)
	c.secretFromFile("ELASTICSEARCH_API_KEY", &e.APIKey, e.apiKeyFile)
	c.add(e.Username == "" || e.Password != "", "ELASTICSEARCH_PASSWORD", "is required with ELASTICSEARCH_USERNAME (or ELASTICSEARCH_PASSWORD_FILE)")
	c.add(e.Password == "" || e.Username != "", "ELASTICSEARCH_USERNAME", "is required with ELASTICSEARCH_PASSWORD")
	c.add(e.APIKey == "" || e.Username == "", "ELASTICSEARCH_API_KEY", "is set, and so is ELASTICSEARCH_USERNAME: authenticate with one of them")
	// An "id:key" pair pasted as it is would be refused with a puzzling 401.
	c.add(e.APIKey == "" || !strings.Contains(e.APIKey, ":"), "ELASTICSEARCH_API_KEY", "looks like id:api_key; use the \"encoded\" value Elasticsearch returns (base64 of id:api_key)")

	trusts := 0
	for _, set := range []bool{e.CACertFile != "", e.CAFingerprint != "", e.InsecureSkipVerify} {
		if set {
			trusts++
		}
	}
	c.add(trusts <= 1, "ELASTICSEARCH_CA_CERT", "ELASTICSEARCH_CA_CERT, ELASTICSEARCH_CA_FINGERPRINT and ELASTICSEARCH_INSECURE_SKIP_VERIFY=true exclude each other: set one")
	e.CACert = c.certificates("ELASTICSEARCH_CA_CERT", e.CACertFile)
	if e.CAFingerprint != "" {
		fp, err := parseFingerprint(e.CAFingerprint)
		c.add(err == nil, "ELASTICSEARCH_CA_FINGERPRINT", "%q: %v", e.CAFingerprint, err)
		e.CAFingerprint = fp
	}
	if trusts > 0 && e.CloudID == "" {
		https := false
		for _, u := range e.Addresses {
			https = https || strings.HasPrefix(u, "https://")
		}
		c.add(https, "ELASTICSEARCH_URL", "no address uses https://, so the certificate settings would never be used")
	}
	c.add(e.StartupTimeout >= 0, "ELASTICSEARCH_STARTUP_TIMEOUT", "must not be negative, got %s", e.StartupTimeout)
}

func validIndexPrefix(p string) bool {
	if p == "" || p[0] == '-' || p[0] == '_' {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// validCloudID accepts what go-elasticsearch can turn into an address: a name, a
// colon, and base64 of host$elasticsearch-id[$kibana-id].
func validCloudID(id string) bool {
	name, encoded, ok := strings.Cut(id, ":")
	if !ok || name == "" || strings.Contains(encoded, ":") {
		return false
	}
	data, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return false
	}
	parts := strings.Split(string(data), "$")
	return len(parts) >= 2 && parts[0] != "" && parts[1] != ""
}

// parseFingerprint accepts a SHA-256 certificate fingerprint the ways tools print
// it: 64 hex digits as Elasticsearch 8 prints at first start, colon-separated pairs
// as `openssl x509 -fingerprint -sha256` prints (with or without its
// "SHA256 Fingerprint=" prefix), in either case. It returns the 64 lower-case hex
// digits the client compares certificates with.
func parseFingerprint(s string) (string, error) {
	s = strings.TrimSpace(s)
	if _, after, ok := strings.Cut(s, "="); ok {
		s = strings.TrimSpace(after)
	}
	if strings.Contains(s, ":") {
		pairs := strings.Split(s, ":")
		for _, p := range pairs {
			if len(p) != 2 {
				return "", errors.New("colon-separated fingerprints have two hex digits between colons")
			}
		}
		s = strings.Join(pairs, "")
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return "", errors.New("not hexadecimal")
	}
	if len(b) != 32 {
		return "", errors.New("a SHA-256 fingerprint has 32 bytes (64 hex digits)")
	}
	return hex.EncodeToString(b), nil
}

// Warnings are what an operator should hear about a setting that works but is
// risky; the binary logs them at start.
func (e Elasticsearch) Warnings() []string {
	var w []string
	if e.InsecureSkipVerify {
		w = append(w, "ELASTICSEARCH_INSECURE_SKIP_VERIFY=true: the Elasticsearch certificate is NOT verified; anyone on the network path can read and change the traffic, credentials included. Use ELASTICSEARCH_CA_CERT or ELASTICSEARCH_CA_FINGERPRINT instead")
	}
	if (e.Username != "" || e.APIKey != "") && slices.ContainsFunc(e.Addresses, func(u string) bool { return strings.HasPrefix(u, "http://") }) {
		w = append(w, "elasticsearch credentials are sent unencrypted to the http:// addresses in ELASTICSEARCH_URL")
	}
	return w
}

// Explain turns a failure to connect into a message that names the variables
// that fix it; other errors pass through.
func (e Elasticsearch) Explain(err error) error {
	var (
		refused   *dial.RefusedError
		untrusted *dial.UntrustedError
	)
	switch {
	case gaveUpWaiting(err, "ELASTICSEARCH_STARTUP_TIMEOUT") != nil:
		return gaveUpWaiting(err, "ELASTICSEARCH_STARTUP_TIMEOUT")
	case errors.As(err, &refused):
		return fmt.Errorf("elasticsearch at %s %s (%s)", refused.Addr, e.rejected(), refused.Why)
	case errors.As(err, &untrusted):
		at := "elasticsearch at " + untrusted.Addr
		switch untrusted.Problem {
		case dial.FingerprintMismatch:
			return fmt.Errorf("%s is not trusted: no certificate it presented has the SHA-256 fingerprint in ELASTICSEARCH_CA_FINGERPRINT (%s); "+
				"`openssl x509 -in http_ca.crt -noout -fingerprint -sha256` prints the right one", at, e.CAFingerprint)
		case dial.UnknownAuthority:
			hint := "set ELASTICSEARCH_CA_CERT to the CA that signed it (config/certs/http_ca.crt on Elasticsearch 8), or ELASTICSEARCH_CA_FINGERPRINT to its fingerprint"
			if e.CACertFile != "" {
				hint = fmt.Sprintf("the CA in ELASTICSEARCH_CA_CERT (%s) did not sign it", e.CACertFile)
			}
			return fmt.Errorf("%v; %s", untrusted, hint)
		case dial.NotTLS:
			return fmt.Errorf("%s does not speak TLS: use an http:// address in ELASTICSEARCH_URL, or enable TLS on its HTTP layer", at)
		}
	}
	return err
}

// rejected says which credentials a 401 refused, by their variables, never by value.
func (e Elasticsearch) rejected() string {
	switch {
	case e.APIKey != "":
		return "rejected the API key in ELASTICSEARCH_API_KEY: it is wrong, expired or invalidated"
	case e.Username != "":
		return fmt.Sprintf("rejected the credentials of user %q: check ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD", e.Username)
	}
	return "requires credentials: set ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD, or ELASTICSEARCH_API_KEY"
}
