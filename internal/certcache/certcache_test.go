package certcache

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/acme/autocert"

	"github.com/annotated-data/pipeline/internal/testenv"
)

var testKey = bytes.Repeat([]byte{7}, 32)

// replicas opens n caches on one bucket, as n backends would.
func replicas(t *testing.T, n int, cfg Config) ([]*Cache, jetstream.KeyValue) {
	t.Helper()
	js := testenv.JetStream(t, testenv.StartNATS(t).URL())
	var caches []*Cache
	for i := range n {
		c := cfg
		c.Key = cmpBytes(c.Key, testKey)
		c.Holder = fmt.Sprintf("replica-%d", i)
		c.PollInterval = 50 * time.Millisecond
		cache, err := Open(context.Background(), js, c, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		caches = append(caches, cache)
	}
	kv, err := js.KeyValue(context.Background(), caches[0].cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	return caches, kv
}

func cmpBytes(a, b []byte) []byte {
	if a != nil {
		return a
	}
	return b
}

// bundle is what autocert stores for a certificate: its key, then its chain.
func bundle(t *testing.T, notBefore, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(notAfter.UnixNano()), Subject: pkix.Name{CommonName: "test.example"},
		DNSNames: []string{"test.example"}, NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return append(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
}

func fresh(t *testing.T) []byte {
	return bundle(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
}

// due has a third of its lifetime or less left: autocert renews it.
func due(t *testing.T) []byte {
	return bundle(t, time.Now().Add(-2*time.Hour), time.Now().Add(30*time.Minute))
}

func TestEntriesAreSealedAndOpenOnlyUnderTheirOwnName(t *testing.T) {
	caches, kv := replicas(t, 1, Config{})
	c, ctx := caches[0], context.Background()
	cert := fresh(t)
	for name, data := range map[string][]byte{"acme_account+key": cert, "test.example": cert, "other.example": fresh(t)} {
		if err := c.Put(ctx, name, data); err != nil {
			t.Fatal(err)
		}
	}

	got, err := c.Get(ctx, "test.example")
	if err != nil || !bytes.Equal(got, cert) {
		t.Fatalf("Get after Put: %v, want the bundle back", err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(e.Value(), []byte("PRIVATE KEY")) || bytes.Contains(e.Value(), []byte("CERTIFICATE")) {
			t.Errorf("bucket key %s holds PEM in clear", k)
		}
	}

	// One domain's entry copied under another's name does not open.
	e, err := kv.Get(ctx, entryKey("other.example"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, entryKey("test.example"), e.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "test.example"); err == nil || errors.Is(err, autocert.ErrCacheMiss) {
		t.Errorf("Get of an entry moved from another name: %v, want a failure to open", err)
	}
}

func TestAnotherKeyCannotOpenTheEntries(t *testing.T) {
	js := testenv.JetStream(t, testenv.StartNATS(t).URL())
	ctx, log := context.Background(), slog.New(slog.DiscardHandler)
	ours, err := Open(ctx, js, Config{Key: testKey}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := ours.Put(ctx, "acme_account+key", fresh(t)); err != nil {
		t.Fatal(err)
	}
	theirs, err := Open(ctx, js, Config{Key: bytes.Repeat([]byte{8}, 32)}, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := theirs.Get(ctx, "acme_account+key"); err == nil || !strings.Contains(err.Error(), "TLS_CACHE_KEY_FILE") {
		t.Errorf("Get with another key: %v, want an error naming TLS_CACHE_KEY_FILE", err)
	}
	if _, err := Open(ctx, js, Config{Key: testKey[:16]}, log); err == nil {
		t.Error("Open with a 128-bit key succeeded, want it refused")
	}
}

func TestEveryCacheNameMapsToAValidBucketKey(t *testing.T) {
	caches, _ := replicas(t, 1, Config{})
	ctx := context.Background()
	for _, name := range []string{"acme_account+key", "test.example", "test.example+rsa", "test.example+token",
		"Xz-_09abc+http-01", "xn--bcher-kva.example", ".leading.dot", "space and/slash"} {
		if err := caches[0].Put(ctx, name, []byte(name)); err != nil {
			t.Errorf("Put %q: %v", name, err)
			continue
		}
		if !isCertificate(name) || name == "space and/slash" || name == ".leading.dot" {
			if got, err := caches[0].Get(ctx, name); err != nil || string(got) != name {
				t.Errorf("Get %q = %q, %v", name, got, err)
			}
		}
	}
}

func TestOfReplicasAskingAtOnceForAMissingCertificateOnlyOneOrders(t *testing.T) {
	caches, _ := replicas(t, 5, Config{})
	cert := fresh(t)
	var (
		mu     sync.Mutex
		misses int
		got    = map[string]int{}
		wg     sync.WaitGroup
	)
	for _, c := range caches {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			data, err := c.Get(ctx, "test.example")
			if errors.Is(err, autocert.ErrCacheMiss) {
				mu.Lock()
				misses++
				mu.Unlock()
				time.Sleep(300 * time.Millisecond) // the order
				if err := c.Put(ctx, "test.example", cert); err != nil {
					t.Error(err)
				}
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				got[err.Error()]++
			} else {
				got[fmt.Sprint(bytes.Equal(data, cert))]++
			}
		})
	}
	wg.Wait()
	if misses != 1 || got["true"] != 4 {
		t.Errorf("%d replicas were told to order, the others got %v; want 1, and 4 with the certificate it ordered", misses, got)
	}
}

// A replica that missed the certificate just before another stored it and
// released the lease takes the free lease; it must then find the certificate,
// not order a second one.
func TestAReplicaThatTakesTheLeaseJustAfterTheCertificateArrivedDoesNotOrder(t *testing.T) {
	caches, _ := replicas(t, 2, Config{})
	orderer, late := caches[0], caches[1]
	ctx := context.Background()
	if _, err := orderer.Get(ctx, "test.example"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("the first replica's Get: %v, want a miss (an order)", err)
	}
	cert := fresh(t)
	late.kv = &staleRead{KeyValue: late.kv, key: entryKey("test.example"), meanwhile: func() {
		if err := orderer.Put(ctx, "test.example", cert); err != nil {
			t.Fatal(err)
		}
	}}
	data, err := late.Get(ctx, "test.example")
	if err != nil || !bytes.Equal(data, cert) {
		t.Fatalf("the late replica's Get: %v, want the certificate the other ordered", err)
	}
	if _, err := late.kv.Get(ctx, leaseKey("test.example")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the lease is still held (%v): the next renewal would wait for it to expire", err)
	}
}

// staleRead answers the first read of key with "not found", as a read that came
// just before meanwhile (another replica's work) did.
type staleRead struct {
	jetstream.KeyValue
	key       string
	meanwhile func()
	done      bool
}

func (s *staleRead) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if key == s.key && !s.done {
		s.done = true
		s.meanwhile()
		return nil, jetstream.ErrKeyNotFound
	}
	return s.KeyValue.Get(ctx, key)
}

func TestWhenTheLeaseHolderDiesAnotherReplicaOrdersAfterTheLeaseTTL(t *testing.T) {
	caches, _ := replicas(t, 2, Config{LeaseTTL: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := caches[0].Get(ctx, "test.example"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("first Get: %v, want a miss (an order)", err)
	}
	// replica-0 dies without storing a certificate.
	start := time.Now()
	if _, err := caches[1].Get(ctx, "test.example"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("second replica's Get: %v, want a miss once the lease expired", err)
	}
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Errorf("the second replica ordered after %s, while the first one's lease still held", waited)
	}
}

func TestTheLeaseHolderAskingAgainIsToldToOrderAgain(t *testing.T) {
	caches, _ := replicas(t, 1, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 2 { // autocert retries a failed order a minute later
		if _, err := caches[0].Get(ctx, "test.example"); !errors.Is(err, autocert.ErrCacheMiss) {
			t.Fatalf("Get #%d: %v, want a miss", i+1, err)
		}
	}
}

func TestOfReplicasWhoseRenewalTimersFireOnlyOneRenews(t *testing.T) {
	caches, _ := replicas(t, 3, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	old, renewed := due(t), fresh(t)
	if err := caches[0].Put(ctx, "test.example", old); err != nil {
		t.Fatal(err)
	}

	var (
		mu      sync.Mutex
		gotOld  int
		gotNew  int
		wg      sync.WaitGroup
		unknown []error
	)
	for _, c := range caches {
		wg.Go(func() {
			data, err := c.Get(ctx, "test.example")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				unknown = append(unknown, err)
			case bytes.Equal(data, old):
				gotOld++ // autocert finds it due and orders
				mu.Unlock()
				time.Sleep(300 * time.Millisecond)
				if err := c.Put(ctx, "test.example", renewed); err != nil {
					t.Error(err)
				}
				mu.Lock()
			case bytes.Equal(data, renewed):
				gotNew++
			}
		})
	}
	wg.Wait()
	if gotOld != 1 || gotNew != 2 || unknown != nil {
		t.Errorf("%d replicas got the due certificate (and renew), %d the renewed one, errors %v; want 1 and 2", gotOld, gotNew, unknown)
	}
}

func TestTokensAndTheAccountKeyAreSharedAndNeverWaitedFor(t *testing.T) {
	caches, _ := replicas(t, 2, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := caches[0].Get(ctx, "test.example"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatal(err)
	}
	for _, name := range []string{"acme_account+key", "tok-en+http-01", "test.example+token"} {
		start := time.Now()
		if _, err := caches[1].Get(ctx, name); !errors.Is(err, autocert.ErrCacheMiss) || time.Since(start) > time.Second {
			t.Errorf("Get %s while another replica orders: %v after %s, want a miss at once", name, err, time.Since(start))
		}
		// What the ordering replica stores, the other answers the CA with.
		if err := caches[0].Put(ctx, name, []byte("value of "+name)); err != nil {
			t.Fatal(err)
		}
		if got, err := caches[1].Get(ctx, name); err != nil || string(got) != "value of "+name {
			t.Errorf("Get %s from another replica = %q, %v; want what the first one stored", name, got, err)
		}
	}
}

func TestTheRenewalRuleIsAutocerts(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name              string
		notBefore, expiry time.Duration // from now
		due               bool
	}{
		{"90 days, just issued", -time.Hour, 90 * 24 * time.Hour, false},
		{"90 days, 31 days left", -59 * 24 * time.Hour, 31 * 24 * time.Hour, false},
		{"90 days, 29 days left", -61 * 24 * time.Hour, 29 * 24 * time.Hour, true},
		{"1 year, 31 days left: the 30-day cap", -334 * 24 * time.Hour, 31 * 24 * time.Hour, false},
		{"60 seconds, 21 seconds left", -39 * time.Second, 21 * time.Second, false},
		{"60 seconds, 19 seconds left", -41 * time.Second, 19 * time.Second, true},
		{"expired", -2 * time.Hour, -time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := dueForRenewal(bundle(t, now.Add(tt.notBefore), now.Add(tt.expiry)), now); got != tt.due {
				t.Errorf("due = %v, want %v", got, tt.due)
			}
		})
	}
	if !dueForRenewal([]byte("not PEM"), now) {
		t.Error("garbage is not due, want due (autocert orders anew)")
	}
}

func TestTheKeyIsReadAs64HexCharacters(t *testing.T) {
	for text, ok := range map[string]bool{
		strings.Repeat("ab", 32) + "\n": true,
		strings.Repeat("AB", 32):        true,
		strings.Repeat("ab", 16):        false,
		strings.Repeat("zz", 32):        false,
		"":                              false,
	} {
		if _, err := ParseKey(text); (err == nil) != ok {
			t.Errorf("ParseKey(%q): %v, want ok=%v", text, err, ok)
		}
	}
}
