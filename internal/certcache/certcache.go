// Package certcache keeps autocert's cache (the ACME account key, certificates
// with their private keys, and challenge tokens) in a NATS JetStream key-value
// bucket, so that backend replicas behind one load balancer share it: any replica
// answers the CA's challenge for an order another replica placed, and every replica
// serves the one certificate.
//
// # Keys at rest
//
// Every value is sealed with AES-256-GCM under a key only the backends hold, with
// the entry's cache name as associated data. Encrypting every entry, not only the
// ones holding private keys, leaves no rule to get wrong: autocert keeps private
// keys under names of several shapes (the account key, "<domain>", "<domain>+rsa",
// and "<domain>+token" for TLS-ALPN-01), and a new shape in a later autocert would
// otherwise land in the bucket in clear. Binding the name means an entry copied
// under another name (one domain's certificate under another's) fails to open.
//
// # One order per name
//
// autocert asks its cache for a certificate before it orders one, in two places:
// on a TLS handshake for a name it holds no certificate for (a miss there makes it
// order), and when its renewal timer fires (a certificate that is due there makes
// it order). Get answers both the same way. When the bucket holds a certificate
// that is not yet due for renewal, it returns it. Otherwise, one replica must
// order: Get creates the name's lease, a key that exists only once (JetStream
// refuses Create for a key that has a value) and vanishes by itself after LeaseTTL
// (a per-key TTL). The replica whose Create succeeds returns the miss, or the due
// certificate, and so orders; its Put of the new certificate deletes the lease.
// Every other replica polls until the bucket holds a certificate that is not due
// (the one just ordered) and returns that, so it orders nothing; or until the lease
// has vanished because its holder died, when the next Create decides who orders
// now. JetStream serialises the Creates on the key, so at any moment at most one
// replica holds a name's lease, and only the holder's Get ever returns a missing
// or due certificate.
//
// "Due" is autocert's own rule (a third of the lifetime before expiry, at most 30
// days) without its jitter. autocert's renewal timer fires at that point plus a
// positive jitter, so a replica whose timer fires always finds the certificate due
// and takes part in the lease; and a certificate Get returns as not due always
// has its next renewal in the future, so autocert does not order on it.
//
// autocert holds its state lock while it reads a certificate it has not loaded
// yet, so while a replica waits for a first certificate its other handshakes wait
// too: at a first start they would wait for that certificate anyway. A renewal
// waits outside that lock, serving the current certificate meanwhile.
//
// A holder that fails to order (the CA is down) keeps the lease until LeaseTTL:
// the others wait that long, then one of them tries. An order that takes longer
// than LeaseTTL may be placed twice; LeaseTTL must exceed the longest order.
package certcache

import (
	"bytes"
	"cmp"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/acme/autocert"
)

// Config is where the shared cache lives and how replicas take turns.
type Config struct {
	// Bucket is the JetStream key-value bucket; created if missing (default AUTOCERT).
	Bucket string
	// Key is the AES-256 key (32 bytes) every entry is sealed with; every replica
	// needs the same one. Required.
	Key []byte
	// LeaseTTL is how long a replica may take to order a certificate before another
	// one may try: longer than the slowest order (default 2m).
	LeaseTTL time.Duration
	// PollInterval is how often a replica waiting for another's order looks for
	// the certificate (default 1s).
	PollInterval time.Duration
	// Replicas is the bucket's replica count when it is created, in a NATS cluster
	// (default 1).
	Replicas int
	// Holder names this replica in its leases and logs (default host/pid/random).
	Holder string
}

// Cache is an autocert.Cache in a JetStream key-value bucket.
type Cache struct {
	kv     jetstream.KeyValue
	aead   cipher.AEAD
	cfg    Config
	holder []byte
	log    *slog.Logger
}

var _ autocert.Cache = (*Cache)(nil)

func (c Config) withDefaults() Config {
	c.Bucket = cmp.Or(c.Bucket, "AUTOCERT")
	c.LeaseTTL = cmp.Or(c.LeaseTTL, 2*time.Minute)
	c.PollInterval = cmp.Or(c.PollInterval, time.Second)
	c.Replicas = cmp.Or(c.Replicas, 1)
	return c
}

// Open binds to cfg.Bucket, creating it if missing.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Cache, error) {
	cfg = cfg.withDefaults()
	if cfg.Holder == "" {
		host, _ := os.Hostname()
		cfg.Holder = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), rand.Text()[:8])
	}
	block, err := aes.NewCipher(cfg.Key)
	if err != nil || len(cfg.Key) != 32 {
		return nil, fmt.Errorf("certificate cache key: want 32 bytes (AES-256), got %d", len(cfg.Key))
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	kv, err := bucket(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	return &Cache{kv: kv, aead: aead, cfg: cfg, holder: []byte(cfg.Holder), log: log}, nil
}

// bucket binds to an existing bucket or creates one that allows per-key TTLs,
// which the leases need.
func bucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      cfg.Bucket,
			Description: "autocert's account key, certificates and challenge tokens, sealed (internal/certcache)",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			// Per-key TTLs (the leases) need it; the markers it keeps are tiny.
			LimitMarkerTTL: time.Minute,
		})
		if errors.Is(err, jetstream.ErrBucketExists) { // another replica was first
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", cfg.Bucket, err)
	}
	status, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", cfg.Bucket, err)
	}
	if s, ok := status.(*jetstream.KeyValueBucketStatus); ok && s.LimitMarkerTTL() == 0 {
		return nil, fmt.Errorf("key-value bucket %s does not allow per-key TTLs, which the certificate leases need: "+
			"delete it and let the backend create it, or create it with a limit marker TTL (nats kv add %s --marker-ttl 1m)", cfg.Bucket, cfg.Bucket)
	}
	return kv, nil
}

// Get returns the entry name holds. For a certificate that is missing or due for
// renewal, it returns autocert.ErrCacheMiss (or the due certificate) only to the
// replica that holds the name's lease; the others wait for the certificate it
// orders. See the package comment.
func (c *Cache) Get(ctx context.Context, name string) ([]byte, error) {
	if !isCertificate(name) {
		return c.get(ctx, name)
	}
	waiting := false
	for {
		data, err := c.get(ctx, name)
		if err != nil && !errors.Is(err, autocert.ErrCacheMiss) {
			return nil, err
		}
		if err == nil && !dueForRenewal(data, time.Now()) {
			if waiting {
				c.log.Info("certificate ordered by another replica arrived", "name", name)
			}
			return data, nil
		}
		holder, err := c.lease(ctx, name)
		if err != nil {
			return nil, err
		}
		if holder == c.cfg.Holder {
			// Another replica may have stored its certificate and released the
			// lease between the read above and this lease: read again, or this
			// replica would order a second certificate for nothing.
			if again, err := c.get(ctx, name); err == nil && !dueForRenewal(again, time.Now()) {
				if err := c.release(ctx, name); err != nil {
					c.log.Warn("certificate found after taking its lease; lease left to expire", "name", name, "err", err)
				}
				return again, nil
			}
			if !waiting {
				c.log.Info("ordering certificate; other replicas wait for it", "name", name, "renewal", data != nil, "holder", holder)
			}
			if data == nil {
				return nil, autocert.ErrCacheMiss
			}
			return data, nil
		}
		if !waiting && holder != "" {
			c.log.Info("another replica is ordering the certificate; waiting for it", "name", name, "holder", holder)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for the certificate for %s that %s orders: %w", name, holder, ctx.Err())
		case <-time.After(c.cfg.PollInterval):
		}
	}
}

// lease takes name's lease if nobody holds it, and returns its holder: "" when
// the lease expired between the attempt and the look, and the next round decides.
func (c *Cache) lease(ctx context.Context, name string) (string, error) {
	key := leaseKey(name)
	_, err := c.kv.Create(ctx, key, c.holder, jetstream.KeyTTL(c.cfg.LeaseTTL))
	if err == nil {
		return c.cfg.Holder, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return "", fmt.Errorf("take the lease on %s: %w", name, err)
	}
	e, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the lease on %s: %w", name, err)
	}
	return string(e.Value()), nil
}

// Put stores data under name; the certificate ordered under a lease releases it.
func (c *Cache) Put(ctx context.Context, name string, data []byte) error {
	if _, err := c.kv.Put(ctx, entryKey(name), c.seal(name, data)); err != nil {
		return fmt.Errorf("store %s in bucket %s: %w", name, c.cfg.Bucket, err)
	}
	if isCertificate(name) {
		// The certificate is stored: a lease left behind only delays the next
		// renewal's turn until it expires.
		if err := c.release(ctx, name); err != nil {
			c.log.Warn("certificate stored, lease left to expire", "name", name, "err", err)
		}
	}
	return nil
}

// release deletes name's lease if this replica holds it. The revision check keeps
// it from deleting a lease another replica took after ours expired.
func (c *Cache) release(ctx context.Context, name string) error {
	e, err := c.kv.Get(ctx, leaseKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the lease on %s: %w", name, err)
	}
	if !bytes.Equal(e.Value(), c.holder) {
		return nil
	}
	if err := c.kv.Delete(ctx, leaseKey(name), jetstream.LastRevision(e.Revision())); err != nil {
		return fmt.Errorf("release the lease on %s: %w", name, err)
	}
	return nil
}

// Delete removes name's entry.
func (c *Cache) Delete(ctx context.Context, name string) error {
	if err := c.kv.Delete(ctx, entryKey(name)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete %s from bucket %s: %w", name, c.cfg.Bucket, err)
	}
	return nil
}

func (c *Cache) get(ctx context.Context, name string) ([]byte, error) {
	e, err := c.kv.Get(ctx, entryKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, autocert.ErrCacheMiss
	}
	if err != nil {
		return nil, fmt.Errorf("read %s from bucket %s: %w", name, c.cfg.Bucket, err)
	}
	return c.open(name, e.Value())
}

// seal encrypts data, bound to name: nonce, then ciphertext and tag.
func (c *Cache) seal(name string, data []byte) []byte {
	nonce := make([]byte, c.aead.NonceSize())
	rand.Read(nonce)
	return c.aead.Seal(nonce, nonce, data, associatedData(name))
}

func (c *Cache) open(name string, sealed []byte) ([]byte, error) {
	n := c.aead.NonceSize()
	if len(sealed) < n {
		return nil, fmt.Errorf("entry %s in bucket %s is too short to be sealed", name, c.cfg.Bucket)
	}
	data, err := c.aead.Open(nil, sealed[:n], sealed[n:], associatedData(name))
	if err != nil {
		return nil, fmt.Errorf("entry %s in bucket %s does not open with TLS_CACHE_KEY_FILE's key (another key, or an entry moved from another name)", name, c.cfg.Bucket)
	}
	return data, nil
}

func associatedData(name string) []byte { return []byte("autocert cache entry " + name) }

// Bucket keys allow only letters, digits and -/_=. (and no leading or trailing
// dot); cache names hold "+" and whatever a domain holds. Unpadded URL-safe base64
// maps every name to that alphabet, one to one.
func entryKey(name string) string {
	return "entry." + base64.RawURLEncoding.EncodeToString([]byte(name))
}
func leaseKey(name string) string {
	return "lease." + base64.RawURLEncoding.EncodeToString([]byte(name))
}

// isCertificate reports whether name holds a certificate autocert orders from the
// CA ("<domain>", "<domain>+rsa"), as opposed to its account key, the TLS-ALPN-01
// certificate of a running challenge ("+token") or an HTTP-01 token ("+http-01").
func isCertificate(name string) bool {
	return !strings.HasPrefix(name, "acme_account") && !strings.HasSuffix(name, "+token") && !strings.HasSuffix(name, "+http-01")
}

// dueForRenewal applies autocert's renewal rule without its jitter: a third of the
// lifetime before expiry, at most 30 days. What does not parse is due: autocert
// too would order anew.
func dueForRenewal(bundle []byte, now time.Time) bool {
	for rest := bundle; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return true
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		leaf, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return true
		}
		threshold := min(leaf.NotAfter.Sub(leaf.NotBefore)/3, 30*24*time.Hour)
		return !now.Before(leaf.NotAfter.Add(-threshold))
	}
}

// ParseKey reads a key written as 64 hex characters (openssl rand -hex 32).
func ParseKey(text string) ([]byte, error) {
	key, err := hex.DecodeString(strings.TrimSpace(text))
	if err != nil || len(key) != 32 {
		return nil, errors.New("want 64 hex characters (a 256-bit key, as openssl rand -hex 32 prints it)")
	}
	return key, nil
}
