package store

import (
	"compress/gzip"
	"context"
	"crypto/tls"
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

	"github.com/annotated-data/pipeline/internal/dial"
)

// newClient builds the go-elasticsearch client from cfg with the client's own
// options for addresses, credentials, trust and compression.
func newClient(cfg Config) (*elasticsearch.Client, error) {
	ec := elasticsearch.Config{
		Addresses:              cfg.Addresses,
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

// verifyAttemptTimeout bounds one start-up check, so an address that swallows
// packets is reported rather than waited on forever.
const verifyAttemptTimeout = 10 * time.Second

// verifyRetryInterval spaces the start-up checks while the cluster is unreachable.
const verifyRetryInterval = 2 * time.Second

// Connect builds the store for cfg and checks, at start, that Elasticsearch is
// reachable, presents a trusted certificate, accepts the credentials and grants
// access. Refused credentials (*dial.RefusedError), missing privileges and
// untrusted certificates (*dial.UntrustedError) fail at once: retrying cannot fix
// them. An unreachable cluster is waited for up to cfg.StartupTimeout
// (*dial.GaveUpError after that).
func Connect(ctx context.Context, cfg Config, access Access, log *slog.Logger) (*Store, error) {
	s, err := New(cfg)
	if err != nil {
		return nil, err
	}
	cfg = s.cfg
	err = dial.Wait(ctx, log, "elasticsearch", cfg.StartupTimeout, verifyRetryInterval, func(ctx context.Context) error {
		return verify(ctx, s.es, cfg, access)
	})
	if err != nil {
		return nil, err
	}
	log.Info("elasticsearch connected", "addresses", where(cfg), "auth", authMethod(cfg), "tls", trust(cfg), "compress", cfg.Compress)
	return s, nil
}

// verify makes one request, the cluster health that readiness checks also make,
// and names what went wrong.
func verify(ctx context.Context, es *elasticsearch.Client, cfg Config, access Access) error {
	ctx, cancel := context.WithTimeout(ctx, verifyAttemptTimeout)
	defer cancel()
	res, err := es.Cluster.Health(es.Cluster.Health.WithContext(ctx))
	if err != nil {
		return explainTransportError(err, cfg)
	}
	defer drain(res)
	switch {
	case res.StatusCode == http.StatusUnauthorized:
		return &dial.RefusedError{Service: "elasticsearch", Addr: where(cfg), Auth: authMethod(cfg), Why: "401 Unauthorized",
			Err: responseError(res)}
	case res.StatusCode == http.StatusForbidden:
		reason := responseError(res).(*ResponseError).Reason
		if err := checkPrivileges(ctx, es, cfg, access); err != nil {
			return err
		}
		return fmt.Errorf("elasticsearch at %s denied access to %s (403 Forbidden: %s); this binary needs %s",
			where(cfg), authMethod(cfg), reason, describe(access.Needs, cfg.IndexPrefix+"-*"))
	case res.IsError():
		re := responseError(res).(*ResponseError)
		err := fmt.Errorf("elasticsearch at %s answered the health check with %w", where(cfg), re)
		if re.Temporary() {
			return dial.Temporary(err)
		}
		return err
	}
	if cfg.APIKey == "" && cfg.Username == "" {
		return nil // a cluster that lets anyone in has no roles to check
	}
	return checkPrivileges(ctx, es, cfg, access)
}

// checkPrivileges fails, naming each one, if the credentials lack any of access's
// privileges, so that a role missing one stops the binary at start rather than
// at the first retention run or follow.
func checkPrivileges(ctx context.Context, es *elasticsearch.Client, cfg Config, access Access) error {
	pattern := cfg.IndexPrefix + "-*"
	missing, err := missingPrivileges(ctx, es, pattern, access)
	if err != nil {
		return explainTransportError(err, cfg)
	}
	if len(missing) == 0 {
		return nil
	}
	return &MissingPrivilegesError{Who: authMethod(cfg), Where: where(cfg), Pattern: pattern, Access: access, Missing: missing}
}

// explainTransportError names the problem behind a request that got no answer.
func explainTransportError(err error, cfg Config) error {
	addr := where(cfg)
	var ue *url.Error
	if errors.As(err, &ue) {
		// net/http has already removed any password from the URL.
		if u, perr := url.Parse(ue.URL); perr == nil {
			addr = u.Scheme + "://" + u.Host
		}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if untrusted := dial.Untrusted("elasticsearch", addr, err); untrusted != nil {
		return untrusted
	}
	// go-elasticsearch checks the first successful answer for the header only
	// Elasticsearch sends, and reports its absence with this text.
	if strings.Contains(err.Error(), "server is not Elasticsearch") {
		return fmt.Errorf("the server at %s is not Elasticsearch: it answered without the X-Elastic-Product header", addr)
	}
	hint := ""
	if errors.Is(err, io.EOF) && strings.HasPrefix(addr, "http://") {
		// Elasticsearch 8 closes plain-HTTP connections to its TLS port without a word.
		hint = " (if it serves HTTPS, as Elasticsearch 8 does by default, the address must start with https://)"
	}
	return dial.Temporary(fmt.Errorf("elasticsearch unreachable at %s%s: %w", addr, hint, err))
}

// where names the cluster in messages: its addresses, which hold no credentials
// (configuration refuses them), or the Cloud deployment's name.
func where(cfg Config) string {
	if cfg.CloudID != "" {
		name, _, _ := strings.Cut(cfg.CloudID, ":")
		return "Elastic Cloud deployment " + name
	}
	return strings.Join(cfg.Addresses, ", ")
}

// authMethod names how the client authenticates, for logs and errors.
func authMethod(cfg Config) string {
	switch {
	case cfg.APIKey != "":
		return "API key"
	case cfg.Username != "":
		return fmt.Sprintf("user %q", cfg.Username)
	}
	return "anonymous"
}

// trust names how the client checks the cluster's certificate, for logs.
func trust(cfg Config) string {
	switch {
	case cfg.InsecureSkipVerify:
		return "NOT VERIFIED"
	case cfg.CACertFile != "":
		return "CA " + cfg.CACertFile
	case len(cfg.CACert) > 0:
		return "CA certificate"
	case cfg.CAFingerprint != "":
		return "certificate fingerprint " + cfg.CAFingerprint
	case cfg.CloudID == "" && !slices.ContainsFunc(cfg.Addresses, func(u string) bool { return strings.HasPrefix(u, "https://") }):
		return "none (http)"
	}
	return "system roots"
}
