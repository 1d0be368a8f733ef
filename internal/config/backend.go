package config

import (
	"crypto/sha256"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/annotated-data/pipeline/internal/api"
	"github.com/annotated-data/pipeline/internal/certcache"
	"github.com/annotated-data/pipeline/internal/certs"
	"github.com/annotated-data/pipeline/internal/follow"
)

// Backend is the REST API's configuration.
type Backend struct {
	ListenAddr    string
	TLS           TLS
	TLSCache      TLSCache
	Elasticsearch Elasticsearch
	// NATS is optional: follow=true and TLS_CACHE=nats need it (NATS.Enabled).
	NATS   NATS
	Follow Follow

	API
	zone string

	ShutdownTimeout time.Duration
	Logging         Logging
}

// TLS is how the backend serves HTTPS.
type TLS = certs.Config

// TLS cache kinds: where autocert keeps its account key and certificates.
const (
	TLSCacheDir  = "dir"  // TLS_CACHE_DIR: one replica
	TLSCacheNATS = "nats" // a JetStream bucket that replicas share
)

// TLSCache is where autocert keeps what it obtains. With TLS_CACHE=nats the
// backend's one NATS connection (NATS_URL and its settings) carries it.
type TLSCache struct {
	Kind string
	certcache.Config
	keyFile string
}

// Follow is whose progress follow=true waits for, and how it polls.
type Follow = follow.Config

// API is what the backend's routes need to know.
type API = api.Config

// maxStallTimeout keeps a stalled client from outliving the point in time its
// export holds open: the store renews that point in time for one minute at each
// page, and a client that takes nothing is cut after this long.
const maxStallTimeout = 45 * time.Second

// maxExportSlices bounds the searches one stream keeps in flight: API_MAX_STREAMS
// streams of this many slices each must not flood Elasticsearch's search queue.
const maxExportSlices = 8

// minAPIKeyLength rejects keys short enough to guess.
const minAPIKeyLength = 16

// BackendVars declares every variable the backend reads; cfg receives the values.
func BackendVars(cfg *Backend) []Var {
	vars := []Var{
		{Name: "LISTEN_ADDR", Default: ":5000", Usage: "address the API listens on (HTTPS unless TLS_MODE=off)", target: &cfg.ListenAddr},
		{Name: "TLS_MODE", Default: certs.Off, Usage: "off: plain HTTP (local runs, or behind a TLS-terminating proxy); file: TLS_CERT_FILE/TLS_KEY_FILE; autocert: certificates from an ACME CA", target: &cfg.TLS.Mode},
		{Name: "TLS_CERT_FILE", Usage: "file mode: PEM certificate chain; read again when it changes", target: &cfg.TLS.CertFile},
		{Name: "TLS_KEY_FILE", Usage: "file mode: PEM private key; read again when it changes", target: &cfg.TLS.KeyFile},
		{Name: "TLS_DOMAINS", Usage: "autocert mode: the host names to obtain certificates for (comma-separated)", target: &cfg.TLS.Domains},
		{Name: "TLS_CACHE_DIR", Default: "/var/lib/backend/autocert", Usage: "autocert mode: where the ACME account key and certificates are kept across restarts", target: &cfg.TLS.CacheDir},
		{Name: "TLS_CACHE", Default: TLSCacheDir, Usage: "autocert mode: dir: TLS_CACHE_DIR, for one replica; nats: a JetStream key-value bucket that replicas behind one load balancer share, so one of them orders each certificate (needs NATS_URL)", target: &cfg.TLSCache.Kind},
		{Name: "TLS_CACHE_BUCKET", Default: "AUTOCERT", Usage: "TLS_CACHE=nats: the key-value bucket; created if missing", target: &cfg.TLSCache.Bucket},
		{Name: "TLS_CACHE_KEY_FILE", Usage: "TLS_CACHE=nats: file holding the 256-bit key, as 64 hex characters (openssl rand -hex 32), that encrypts every entry; the same on every replica; required", target: &cfg.TLSCache.keyFile},
		{Name: "TLS_CACHE_LEASE_TTL", Default: "2m", Usage: "TLS_CACHE=nats: how long one replica may take to order a certificate before another may; longer than the slowest order", target: &cfg.TLSCache.LeaseTTL},
		{Name: "TLS_CACHE_REPLICAS", Default: "1", Usage: "TLS_CACHE=nats: replicas of the bucket when it is created, in a NATS cluster", target: &cfg.TLSCache.Replicas},
		{Name: "ACME_EMAIL", Usage: "autocert mode: contact address for the CA's expiry and problem notices (optional)", target: &cfg.TLS.ACMEEmail},
		{Name: "ACME_DIRECTORY_URL", Default: certs.LetsEncryptDirectory, Usage: "autocert mode: the CA's ACME directory (Let's Encrypt staging, or any ACME CA)", target: &cfg.TLS.ACMEDirectoryURL},
		{Name: "ACME_HTTP_ADDR", Default: ":80", Usage: "autocert mode: address of the HTTP-01 challenges and the HTTP-to-HTTPS redirect; the CA connects to port 80", target: &cfg.TLS.ACMEHTTPAddr},
		{Name: "ACME_CA_ROOTS", Usage: "autocert mode: PEM file of extra root certificates to trust for the ACME directory (a private CA)", target: &cfg.TLS.ACMECARoots},
	}
	vars = append(vars, cfg.Elasticsearch.vars()...)
	vars = append(vars,
		Var{Name: "ELASTICSEARCH_PIT_TIMEOUT", Default: "10s", Usage: "how long Elasticsearch may take to open a stream's point in time; a slower cluster gets the stream answered 504 elasticsearch_timeout (slow), not 503 (unreachable)", target: &cfg.Elasticsearch.PITTimeout})
	vars = append(vars, cfg.NATS.optionalVars("follow=true and TLS_CACHE=nats")...)
	vars = append(vars,
		Var{Name: "NATS_STREAM", Default: "ANNOTATIONS", Usage: "follow=true: the webserver's stream", target: &cfg.Follow.Stream},
		Var{Name: "NATS_DURABLE", Default: "webserver", Usage: "follow=true: the webserver's durable consumer; its ack floor says which messages are settled", target: &cfg.Follow.Durable},
		Var{Name: "FOLLOW_POLL_INTERVAL", Default: "250ms", Usage: "follow=true: how often the webserver's progress is read while someone follows and no notice of a settled batch came (the notices make the steps; polling catches a lost one); a refresh and a query follow only when it moved", target: &cfg.Follow.PollInterval},
		Var{Name: "FOLLOW_MIN_STEP_INTERVAL", Default: "100ms", Usage: "follow=true: the least time between two steps, and so at most 1s/this refreshes of the indices a second from this backend; raise it when many backends follow one cluster", target: &cfg.Follow.MinStepInterval},
		Var{Name: "FOLLOW_BUFFER", Default: "10000", Usage: "follow=true: documents held for a follower that has not taken them yet; one further behind is cut", target: &cfg.Follow.Buffer},
		Var{Name: "FOLLOW_HEARTBEAT", Default: "15s", Usage: "follow=true: an idle stream sends a keep-alive this often, so proxies keep it open; an NDJSON follow sends its cursor this often, busy or idle", target: &cfg.Heartbeat},
		Var{Name: "API_MAX_FOLLOWERS", Default: "0", Usage: "follow=true streams served at once (they also count against API_MAX_STREAMS); more are answered 503 (0: half of API_MAX_STREAMS, at least 1)", target: &cfg.MaxFollowers},
	)
	vars = append(vars,
		Var{Name: "API_PAGE_SIZE", Default: "10000", Usage: "most documents fetched from Elasticsearch per page while streaming", target: &cfg.PageSize},
		Var{Name: "API_FIRST_PAGE_SIZE", Default: "1000", Usage: "documents of a stream's first page, so that they go out at once; each next page doubles, up to API_PAGE_SIZE (unset: at most API_PAGE_SIZE)", target: &cfg.FirstPageSize},
		Var{Name: "API_EXPORT_SLICES", Default: "1", Usage: "slices of its Elasticsearch point in time each stream reads in parallel and merges back into order; more can be faster on a cluster with processors to spare, and puts more searches in flight (1: one stream)", target: &cfg.ExportSlices},
		Var{Name: "API_DEFAULT_TIMEZONE", Default: "UTC", Usage: "IANA zone for start_date/end_date written without one", target: &cfg.zone},
		Var{Name: "API_MAX_RANGE", Default: "0s", Usage: "longest end_date - start_date a request may ask for, e.g. 168h (0s: unlimited)", target: &cfg.MaxRange},
		Var{Name: "API_MAX_STREAMS", Default: "32", Usage: "streams served at once (each holds an Elasticsearch point in time); when all are taken, the one that has waited longest (2s at least) for its client gives its slot to a newcomer, and a newcomer that finds none within 4s is answered 503", target: &cfg.MaxStreams},
		Var{Name: "API_MAX_STREAMS_PER_CLIENT", Default: "0", Usage: "streams one client (address, or /64 for IPv6) may hold at once; more are answered 429 (0: a quarter of API_MAX_STREAMS, at least 1)", target: &cfg.MaxClientStreams},
		Var{Name: "STREAM_STALL_TIMEOUT", Default: "30s", Usage: "the window of STREAM_MIN_RATE: a stream whose client takes less than that over this much time spent waiting for it is ended, as is an HTTP/2 connection that takes no byte for this long (at most 45s; keep it above the longest pause of a steady reader's socket buffers, about 10s at 150 KB/s)", target: &cfg.StallTimeout},
		Var{Name: "STREAM_MIN_RATE", Default: "16384", Usage: "bytes a second, as sent (compressed), that a stream's client must take on average over STREAM_STALL_TIMEOUT", target: &cfg.MinRate},
		Var{Name: "API_KEYS", Secret: true, Usage: "comma-separated keys, at least 16 characters each; when set, the data endpoints and /metrics need one (Authorization: Bearer or X-API-Key)", target: &cfg.APIKeys},
		Var{Name: "CORS_ALLOWED_ORIGINS", Usage: "origins whose pages may call the API, e.g. https://app.example.com (comma-separated; * for any)", target: &cfg.CORSOrigins},
		Var{Name: "RATE_LIMIT_REQUESTS", Default: "120", Usage: "requests a client may make per RATE_LIMIT_WINDOW (0: no limit)", target: &cfg.RateLimit},
		Var{Name: "RATE_LIMIT_WINDOW", Default: "1m", Usage: "the window of RATE_LIMIT_REQUESTS", target: &cfg.RateWindow},
		Var{Name: "TRUSTED_PROXIES", Usage: "CIDRs of reverse proxies whose X-Forwarded-For names the client (comma-separated); empty: the peer address is the client", target: &cfg.TrustedProxies},
		Var{Name: "SHUTDOWN_TIMEOUT", Default: "30s", Usage: "how long running streams may finish after a stop signal", target: &cfg.ShutdownTimeout},
	)
	return append(vars, cfg.Logging.vars()...)
}

// LoadBackend reads and validates the backend's configuration.
func LoadBackend(getenv func(string) string) (Backend, error) {
	var cfg Backend
	c := load(getenv, BackendVars(&cfg))
	c.hostPort("LISTEN_ADDR", cfg.ListenAddr)
	checkTLS(&cfg.TLS, c)
	checkTLSCache(&cfg.TLSCache, cfg.TLS.Mode, cfg.NATS.Enabled(), c)
	cfg.Elasticsearch.check(c)
	cfg.NATS.checkOptional(c)
	if !cfg.NATS.Enabled() {
		for _, name := range []string{"NATS_STREAM", "NATS_DURABLE", "FOLLOW_POLL_INTERVAL", "FOLLOW_MIN_STEP_INTERVAL", "FOLLOW_BUFFER", "FOLLOW_HEARTBEAT", "API_MAX_FOLLOWERS"} {
			c.add(!c.set[name], name, "is set, but NATS_URL is not: follow=true needs NATS")
		}
	}
	c.add(cfg.Follow.Stream != "", "NATS_STREAM", "must not be empty")
	c.add(cfg.Follow.Durable != "", "NATS_DURABLE", "must not be empty")
	c.add(cfg.Follow.PollInterval >= 100*time.Millisecond, "FOLLOW_POLL_INTERVAL", "must be at least 100ms, got %s", cfg.Follow.PollInterval)
	c.add(cfg.Follow.MinStepInterval >= 10*time.Millisecond, "FOLLOW_MIN_STEP_INTERVAL", "must be at least 10ms, got %s", cfg.Follow.MinStepInterval)
	c.positive("FOLLOW_BUFFER", cfg.Follow.Buffer)
	c.add(cfg.Heartbeat >= time.Second, "FOLLOW_HEARTBEAT", "must be at least 1s, got %s", cfg.Heartbeat)
	c.add(cfg.MaxFollowers >= 0 && cfg.MaxFollowers <= max(cfg.MaxStreams, 1), "API_MAX_FOLLOWERS",
		"must be between 0 and API_MAX_STREAMS (%d), got %d", cfg.MaxStreams, cfg.MaxFollowers)
	c.add(cfg.PageSize > 0 && cfg.PageSize <= 10000, "API_PAGE_SIZE", "must be between 1 and 10000, got %d", cfg.PageSize)
	if c.set["API_FIRST_PAGE_SIZE"] {
		c.add(cfg.FirstPageSize > 0 && cfg.FirstPageSize <= max(cfg.PageSize, 1), "API_FIRST_PAGE_SIZE", "must be between 1 and API_PAGE_SIZE (%d), got %d", cfg.PageSize, cfg.FirstPageSize)
	} else {
		// A deployment that set small pages before the first page had a size of
		// its own keeps them all that size.
		cfg.FirstPageSize = min(cfg.FirstPageSize, cfg.PageSize)
	}
	c.add(cfg.ExportSlices >= 1 && cfg.ExportSlices <= maxExportSlices, "API_EXPORT_SLICES", "must be between 1 and %d, got %d", maxExportSlices, cfg.ExportSlices)
	cfg.DefaultZone = c.zone("API_DEFAULT_TIMEZONE", cfg.zone)
	c.add(cfg.MaxRange >= 0, "API_MAX_RANGE", "must not be negative, got %s", cfg.MaxRange)
	c.positive("API_MAX_STREAMS", cfg.MaxStreams)
	c.add(cfg.MaxClientStreams >= 0 && cfg.MaxClientStreams <= max(cfg.MaxStreams, 1), "API_MAX_STREAMS_PER_CLIENT",
		"must be between 0 and API_MAX_STREAMS (%d), got %d", cfg.MaxStreams, cfg.MaxClientStreams)
	c.add(cfg.StallTimeout >= time.Second && cfg.StallTimeout <= maxStallTimeout, "STREAM_STALL_TIMEOUT",
		"must be between 1s and %s (the point in time of a stream lives 1m past each page), got %s", maxStallTimeout, cfg.StallTimeout)
	c.add(cfg.MinRate >= 1, "STREAM_MIN_RATE", "must be at least 1 byte a second, got %d", cfg.MinRate)
	for i, k := range cfg.APIKeys {
		// Secret: name the key by position, never by value.
		c.add(len(k) >= minAPIKeyLength, "API_KEYS", "key #%d is shorter than %d characters", i+1, minAPIKeyLength)
		c.add(!strings.ContainsAny(k, " \t\r\n"), "API_KEYS", "key #%d contains white space", i+1)
	}
	for _, o := range cfg.CORSOrigins {
		c.add(validOrigin(o), "CORS_ALLOWED_ORIGINS", "%q is not an origin like https://app.example.com (scheme and host, no path), nor *", o)
	}
	c.add(cfg.RateLimit >= 0, "RATE_LIMIT_REQUESTS", "must not be negative, got %d", cfg.RateLimit)
	c.positiveDuration("RATE_LIMIT_WINDOW", cfg.RateWindow)
	for _, p := range cfg.TrustedProxies {
		_, err := netip.ParsePrefix(p)
		c.add(err == nil, "TRUSTED_PROXIES", "%q is not a CIDR like 10.0.0.0/8 or 192.0.2.7/32", p)
	}
	c.positiveDuration("SHUTDOWN_TIMEOUT", cfg.ShutdownTimeout)
	c.positiveDuration("ELASTICSEARCH_PIT_TIMEOUT", cfg.Elasticsearch.PITTimeout)
	cfg.HSTS = cfg.TLS.Mode != certs.Off
	cfg.CursorKey = cursorKey(cfg)
	cfg.Logging.check(c)
	return cfg, c.err()
}

func checkTLS(t *TLS, c *checks) {
	c.oneOf("TLS_MODE", t.Mode, certs.Off, certs.File, certs.Autocert)
	switch t.Mode {
	case certs.File:
		c.add(t.CertFile != "", "TLS_CERT_FILE", "is required with TLS_MODE=file")
		c.add(t.KeyFile != "", "TLS_KEY_FILE", "is required with TLS_MODE=file")
	case certs.Autocert:
		c.add(len(t.Domains) > 0, "TLS_DOMAINS", "is required with TLS_MODE=autocert")
		for _, d := range t.Domains {
			c.add(validHostName(d), "TLS_DOMAINS", "%q is not a host name like api.example.com (no scheme, port or wildcard)", d)
		}
		c.add(t.CacheDir != "", "TLS_CACHE_DIR", "is required with TLS_MODE=autocert: without it every restart asks the CA for new certificates")
		c.add(t.ACMEEmail == "" || strings.Contains(t.ACMEEmail, "@"), "ACME_EMAIL", "%q is not an e-mail address", t.ACMEEmail)
		u, err := url.Parse(t.ACMEDirectoryURL)
		c.add(err == nil && u.Scheme == "https" && u.Host != "", "ACME_DIRECTORY_URL", "%q is not an https:// URL", t.ACMEDirectoryURL)
		c.hostPort("ACME_HTTP_ADDR", t.ACMEHTTPAddr)
	}
}

// checkTLSCache checks the cache's settings, and reads its key.
func checkTLSCache(t *TLSCache, mode string, natsEnabled bool, c *checks) {
	c.oneOf("TLS_CACHE", t.Kind, TLSCacheDir, TLSCacheNATS)
	if t.Kind != TLSCacheNATS {
		for _, name := range []string{"TLS_CACHE_BUCKET", "TLS_CACHE_KEY_FILE", "TLS_CACHE_LEASE_TTL", "TLS_CACHE_REPLICAS"} {
			c.add(!c.set[name], name, "is set, but TLS_CACHE is not nats")
		}
		return
	}
	c.add(mode == certs.Autocert, "TLS_CACHE", "nats is only for TLS_MODE=autocert")
	c.add(natsEnabled, "NATS_URL", "is required with TLS_CACHE=nats: the certificate cache lives in NATS")
	c.add(t.Bucket != "" && !strings.ContainsAny(t.Bucket, " .*>"), "TLS_CACHE_BUCKET", "%q is not a bucket name (letters, digits, - and _)", t.Bucket)
	c.add(t.LeaseTTL >= time.Second, "TLS_CACHE_LEASE_TTL", "must be at least 1s, got %s", t.LeaseTTL)
	c.positive("TLS_CACHE_REPLICAS", t.Replicas)
	if t.keyFile == "" {
		c.add(false, "TLS_CACHE_KEY_FILE", "is required with TLS_CACHE=nats: the bucket must not hold the private keys in clear")
		return
	}
	data, err := os.ReadFile(t.keyFile)
	if err != nil {
		c.add(false, "TLS_CACHE_KEY_FILE", "cannot read the key: %v", err) // names the path, never the content
		return
	}
	key, err := certcache.ParseKey(string(data))
	c.add(err == nil, "TLS_CACHE_KEY_FILE", "%s: %v", t.keyFile, err)
	t.Key = key
}

func (c *checks) hostPort(name, addr string) {
	_, port, err := net.SplitHostPort(addr)
	c.add(err == nil && port != "", name, "%q is not an address like :5000 or 127.0.0.1:5000", addr)
}

// validOrigin accepts what a browser sends in Origin (scheme://host[:port]), with
// the wildcards github.com/go-chi/cors understands: "*" alone, or one "*" in the host.
func validOrigin(o string) bool {
	if o == "*" {
		return true
	}
	u, err := url.Parse(strings.Replace(o, "*", "wildcard", 1))
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.Path == "" && u.RawQuery == "" && u.User == nil && u.Fragment == "" && strings.Count(o, "*") <= 1
}

// validHostName accepts a DNS name a CA can issue a certificate for over HTTP-01.
func validHostName(h string) bool {
	if h == "" || len(h) > 253 || strings.HasPrefix(h, ".") || strings.HasSuffix(h, ".") {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// cursorKey derives the key that authenticates the API's cursors from what
// every replica of one deployment shares, and keeps across restarts: its
// indices, its stream and, when set, its API keys, which keep the key secret.
// A deployment without API keys serves its documents to anyone, and its cursors
// only need to be recognised, not kept secret.
func cursorKey(cfg Backend) []byte {
	h := sha256.New()
	for _, part := range append([]string{"cursor-key-v1", cfg.Elasticsearch.IndexPrefix, cfg.Follow.Stream, cfg.Follow.Durable}, slices.Sorted(slices.Values(cfg.APIKeys))...) {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}
