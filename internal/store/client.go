package store

import (
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8"

	"github.com/annotated-data/pipeline/internal/config"
)

// newClient builds the go-elasticsearch client from cfg with the client's own
// options for addresses, credentials, trust and compression.
func newClient(cfg config.Elasticsearch) (*elasticsearch.Client, error) {
	ec := elasticsearch.Config{
		Addresses:              cfg.URLs,
		CloudID:                cfg.CloudID,
		Username:               cfg.Username,
		Password:               cfg.Password,
		APIKey:                 cfg.APIKey,
		CACert:                 cfg.CACert,
		CertificateFingerprint: cfg.CAFingerprint,
		// Bulk bodies are rebuilt from the pipeline's own buffers on retry, and search
		// bodies are small; the client's own retry on 502/503/504, and on a network
		// error with the next address, is what we want.
		RetryOnStatus: []int{502, 503, 504},
		MaxRetries:    3,
		// Off by default: on a fast link it costs the webserver about 2.5µs of CPU
		// per document (a quarter more) and gains no throughput (measured with
		// BenchmarkWebserverIngest). Where bandwidth is scarce, the fastest level
		// already shrinks bulk bodies sixfold; the default level gains a fifth more
		// for three times the CPU.
		CompressRequestBody:      cfg.Compress,
		CompressRequestBodyLevel: gzip.BestSpeed,
		PoolCompressor:           true,
	}
	if cfg.InsecureSkipVerify {
		// The client has no setting for this; a transport that skips verification is
		// its documented way.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		ec.Transport = tr
	}
	return elasticsearch.NewClient(ec)
}

// Access is what a binary does with the indices, and so which privileges its
// Elasticsearch user needs.
type Access int

// Kinds of access.
const (
	// Write is the webserver's: it installs the index template and creates indices
	// and documents.
	Write Access = iota + 1
	// Read is the backend's: it searches the indices through points in time.
	Read
)

// privileges lists what a user needs for a on the indices of prefix, in the terms
// of Elasticsearch's role API. Both kinds check cluster health for readiness.
func (a Access) privileges(prefix string) string {
	if a == Write {
		return fmt.Sprintf("cluster privileges monitor and manage_index_templates, and index privileges create_doc and create_index on %s-*", prefix)
	}
	return fmt.Sprintf("cluster privilege monitor, and index privilege read (which covers points in time) on %s-*", prefix)
}

// verifyAttemptTimeout bounds one start-up check, so an address that swallows
// packets is reported rather than waited on forever.
const verifyAttemptTimeout = 10 * time.Second

// verifyRetryInterval spaces the start-up checks while the cluster is unreachable.
const verifyRetryInterval = 2 * time.Second

// Connect builds the store for cfg and checks, at start, that Elasticsearch is
// reachable, presents a trusted certificate, accepts the credentials and grants
// access. Wrong credentials, missing privileges and untrusted certificates fail at
// once with an error naming the problem: retrying cannot fix them. An unreachable
// cluster is retried for cfg.StartupTimeout, logged once, because services that
// start together (compose, Kubernetes) often start before their cluster does.
func Connect(ctx context.Context, cfg config.Elasticsearch, access Access, log *slog.Logger, opts ...Option) (*Store, error) {
	if cfg.InsecureSkipVerify {
		log.Warn("ELASTICSEARCH_INSECURE_SKIP_VERIFY=true: the Elasticsearch certificate is NOT verified; anyone on the network path can read and change the traffic, credentials included. Use ELASTICSEARCH_CA_CERT or ELASTICSEARCH_CA_FINGERPRINT instead")
	}
	if (cfg.Username != "" || cfg.APIKey != "") && slices.ContainsFunc(cfg.URLs, func(u string) bool { return strings.HasPrefix(u, "http://") }) {
		log.Warn("elasticsearch credentials are sent unencrypted to the http:// addresses in ELASTICSEARCH_URL")
	}
	s, err := New(cfg, opts...)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	waiting := false
	for {
		err := verify(ctx, s.es, cfg, access)
		if err == nil {
			if waiting {
				log.Info("elasticsearch reachable", "after", time.Since(began).Round(time.Second).String())
			}
			log.Info("elasticsearch connected", "addresses", where(cfg), "auth", authMethod(cfg), "tls", trust(cfg), "compress", cfg.Compress)
			return s, nil
		}
		var temporary temporaryError
		if !errors.As(err, &temporary) || time.Since(began) >= cfg.StartupTimeout {
			if waiting && errors.As(err, &temporary) {
				return nil, fmt.Errorf("%w (gave up after %s, ELASTICSEARCH_STARTUP_TIMEOUT)", err, time.Since(began).Round(time.Second))
			}
			return nil, err
		}
		if !waiting {
			log.Warn("elasticsearch not reachable yet; retrying", "err", err.Error(), "for", cfg.StartupTimeout.String())
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for elasticsearch: %w", ctx.Err())
		case <-time.After(min(verifyRetryInterval, cfg.StartupTimeout-time.Since(began))):
		}
	}
}

// temporaryError marks a start-up problem that time may fix: an unreachable or
// overloaded cluster.
type temporaryError struct{ error }

func (e temporaryError) Unwrap() error { return e.error }

// verify makes one request, the cluster health that readiness checks also make,
// and names what went wrong.
func verify(ctx context.Context, es *elasticsearch.Client, cfg config.Elasticsearch, access Access) error {
	ctx, cancel := context.WithTimeout(ctx, verifyAttemptTimeout)
	defer cancel()
	res, err := es.Cluster.Health(es.Cluster.Health.WithContext(ctx))
	if err != nil {
		return explainTransportError(err, cfg)
	}
	defer drain(res)
	switch {
	case res.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("elasticsearch at %s %s (401 Unauthorized)", where(cfg), rejected(cfg))
	case res.StatusCode == http.StatusForbidden:
		return fmt.Errorf("elasticsearch at %s denied access to %s (403 Forbidden: %s); this binary needs the %s",
			where(cfg), authMethod(cfg), responseError(res).(*ResponseError).Reason, access.privileges(cfg.IndexPrefix))
	case res.IsError():
		re := responseError(res).(*ResponseError)
		err := fmt.Errorf("elasticsearch at %s answered the health check with %w", where(cfg), re)
		if re.Temporary() {
			return temporaryError{err}
		}
		return err
	}
	return nil
}

// rejected says which credentials a 401 refused, by their variables, never by value.
func rejected(cfg config.Elasticsearch) string {
	switch {
	case cfg.APIKey != "":
		return "rejected the API key in ELASTICSEARCH_API_KEY: it is wrong, expired or invalidated"
	case cfg.Username != "":
		return fmt.Sprintf("rejected the credentials of user %q: check ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD", cfg.Username)
	}
	return "requires credentials: set ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD, or ELASTICSEARCH_API_KEY"
}

// explainTransportError names the problem behind a request that got no answer.
func explainTransportError(err error, cfg config.Elasticsearch) error {
	addr := where(cfg)
	var ue *url.Error
	if errors.As(err, &ue) {
		// net/http has already removed any password from the URL.
		if u, perr := url.Parse(ue.URL); perr == nil {
			addr = u.Scheme + "://" + u.Host
		}
	}
	var (
		unknownCA   x509.UnknownAuthorityError
		badHost     x509.HostnameError
		invalid     x509.CertificateInvalidError
		notTLS      tls.RecordHeaderError
		untrustedBy = "set ELASTICSEARCH_CA_CERT to the CA that signed it (config/certs/http_ca.crt on Elasticsearch 8), or ELASTICSEARCH_CA_FINGERPRINT to its fingerprint"
	)
	if cfg.CACertFile != "" {
		untrustedBy = fmt.Sprintf("the CA in ELASTICSEARCH_CA_CERT (%s) did not sign it", cfg.CACertFile)
	}
	switch {
	case errors.Is(err, context.Canceled):
		return err
	// The client's fingerprint check reports a mismatch with this text only.
	case strings.Contains(err.Error(), "fingerprint mismatch"):
		return fmt.Errorf("elasticsearch at %s is not trusted: no certificate it presented has the SHA-256 fingerprint in ELASTICSEARCH_CA_FINGERPRINT (%s); "+
			"`openssl x509 -in http_ca.crt -noout -fingerprint -sha256` prints the right one", addr, cfg.CAFingerprint)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("elasticsearch at %s is not trusted: its TLS certificate is signed by an unknown authority (%q); %s",
			addr, issuer(unknownCA.Cert), untrustedBy)
	case errors.As(err, &badHost):
		return fmt.Errorf("elasticsearch at %s is not trusted: its TLS certificate does not name that host (%v); connect by a name the certificate holds", addr, badHost)
	case errors.As(err, &invalid):
		return fmt.Errorf("elasticsearch at %s is not trusted: its TLS certificate is invalid (%v)", addr, invalid)
	case errors.As(err, &notTLS):
		return fmt.Errorf("elasticsearch at %s does not speak TLS: use an http:// address, or enable TLS on its HTTP layer", addr)
	// go-elasticsearch checks the first successful answer for the header only
	// Elasticsearch sends, and reports its absence with this text.
	case strings.Contains(err.Error(), "server is not Elasticsearch"):
		return fmt.Errorf("the server at %s is not Elasticsearch: it answered without the X-Elastic-Product header", addr)
	}
	hint := ""
	if errors.Is(err, io.EOF) && strings.HasPrefix(addr, "http://") {
		// Elasticsearch 8 closes plain-HTTP connections to its TLS port without a word.
		hint = " (if it serves HTTPS, as Elasticsearch 8 does by default, the address must start with https://)"
	}
	return temporaryError{fmt.Errorf("elasticsearch unreachable at %s%s: %w", addr, hint, err)}
}

func issuer(c *x509.Certificate) string {
	if c == nil {
		return "unknown issuer"
	}
	return c.Issuer.String()
}

// where names the cluster in messages: its addresses, which hold no credentials
// (configuration refuses them), or the Cloud deployment's name.
func where(cfg config.Elasticsearch) string {
	if cfg.CloudID != "" {
		name, _, _ := strings.Cut(cfg.CloudID, ":")
		return "Elastic Cloud deployment " + name
	}
	return strings.Join(cfg.URLs, ", ")
}

// authMethod names how the client authenticates, for logs and errors.
func authMethod(cfg config.Elasticsearch) string {
	switch {
	case cfg.APIKey != "":
		return "API key"
	case cfg.Username != "":
		return fmt.Sprintf("user %q", cfg.Username)
	}
	return "anonymous"
}

// trust names how the client checks the cluster's certificate, for logs.
func trust(cfg config.Elasticsearch) string {
	switch {
	case cfg.InsecureSkipVerify:
		return "NOT VERIFIED (ELASTICSEARCH_INSECURE_SKIP_VERIFY)"
	case cfg.CACertFile != "":
		return "CA " + cfg.CACertFile
	case cfg.CAFingerprint != "":
		return "certificate fingerprint " + cfg.CAFingerprint
	case cfg.CloudID == "" && !slices.ContainsFunc(cfg.URLs, func(u string) bool { return strings.HasPrefix(u, "https://") }):
		return "none (http)"
	}
	return "system roots"
}
