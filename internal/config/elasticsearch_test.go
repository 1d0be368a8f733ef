package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFingerprintsAreAcceptedAsElasticsearchAndOpenSSLPrintThem(t *testing.T) {
	const want = "a5f0c1d2e3f405162738495a6b7c8d9eafb0c1d2e3f405162738495a6b7c8d9e"
	colons := "A5:F0:C1:D2:E3:F4:05:16:27:38:49:5A:6B:7C:8D:9E:AF:B0:C1:D2:E3:F4:05:16:27:38:49:5A:6B:7C:8D:9E"
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{want, want, ""},                                            // Elasticsearch 8's first start
		{strings.ToUpper(want), want, ""},                           // either case
		{colons, want, ""},                                          // openssl x509 -fingerprint -sha256
		{"SHA256 Fingerprint=" + colons, want, ""},                  // ... with its prefix
		{"sha256 Fingerprint=" + strings.ToLower(colons), want, ""}, // older openssl
		{"  " + want + "\n", want, ""},                              // pasted with white space
		{want[:62], "", "64 hex digits"},                            // a digit pair short
		{want[:40], "", "64 hex digits"},                            // a SHA-1 fingerprint
		{strings.Replace(want, "a5", "zz", 1), "", "not hexadecimal"},
		{"A5F:0" + colons[5:], "", "two hex digits between colons"},
		{"", "", "64 hex digits"},
	}
	for _, tt := range tests {
		got, err := parseFingerprint(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("parseFingerprint(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("parseFingerprint(%q) = %q, %v; want an error saying %q", tt.in, got, err, tt.wantErr)
		}
	}
}

func TestElasticsearchSecretsCanComeFromFiles(t *testing.T) {
	dir := t.TempDir()
	password := writeFile(t, dir, "password", "s3cret-pass\n") // as `echo` writes it
	apiKey := writeFile(t, dir, "api-key", "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==")

	cfg, err := LoadBackend(env(map[string]string{"ELASTICSEARCH_USERNAME": "backend", "ELASTICSEARCH_PASSWORD_FILE": password}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Elasticsearch.Password != "s3cret-pass" {
		t.Errorf("password from file = %q, want %q (without the line break)", cfg.Elasticsearch.Password, "s3cret-pass")
	}
	cfg, err = LoadBackend(env(map[string]string{"ELASTICSEARCH_API_KEY_FILE": apiKey}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Elasticsearch.APIKey != "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==" {
		t.Errorf("API key from file = %q", cfg.Elasticsearch.APIKey)
	}
}

func TestASecretAndItsFileTogetherAreRefusedWithoutEchoingEither(t *testing.T) {
	file := writeFile(t, t.TempDir(), "secret", "from-the-file")
	_, err := LoadIngester(env(map[string]string{
		"ELASTICSEARCH_USERNAME": "u", "ELASTICSEARCH_PASSWORD": "es-from-env", "ELASTICSEARCH_PASSWORD_FILE": file,
		"ELASTICSEARCH_API_KEY": "key-from-env", "ELASTICSEARCH_API_KEY_FILE": file,
		"NATS_USER": "u", "NATS_PASSWORD": "nats-from-env", "NATS_PASSWORD_FILE": file,
		"NATS_TOKEN": "token-from-env", "NATS_TOKEN_FILE": file,
	}))
	if err == nil {
		t.Fatal("accepted secrets set both directly and as files")
	}
	msg := err.Error()
	for _, name := range []string{"ELASTICSEARCH_PASSWORD", "ELASTICSEARCH_API_KEY", "NATS_PASSWORD", "NATS_TOKEN"} {
		if want := name + "_FILE: is set, and so is " + name + ": set one of them"; !strings.Contains(msg, want) {
			t.Errorf("error does not say %q:\n%s", want, msg)
		}
	}
	for _, secret := range []string{"from-the-file", "es-from-env", "key-from-env", "nats-from-env", "token-from-env"} {
		if strings.Contains(msg, secret) {
			t.Errorf("error echoes the secret %q:\n%s", secret, msg)
		}
	}
}

func TestAnUnreadableSecretFileIsNamedWithItsPath(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-file")
	_, err := LoadBackend(env(map[string]string{"ELASTICSEARCH_API_KEY_FILE": missing}))
	if err == nil || !strings.Contains(err.Error(), "ELASTICSEARCH_API_KEY_FILE: cannot read the secret: open "+missing) {
		t.Errorf("err = %v, want it to name ELASTICSEARCH_API_KEY_FILE and %s", err, missing)
	}
	empty := writeFile(t, t.TempDir(), "empty", "\n")
	_, err = LoadBackend(env(map[string]string{"ELASTICSEARCH_API_KEY_FILE": empty}))
	if err == nil || !strings.Contains(err.Error(), "ELASTICSEARCH_API_KEY_FILE: "+empty+" is empty") {
		t.Errorf("err = %v, want it to say %s is empty", err, empty)
	}
}

func TestElasticsearchConnectionSettingsAreValidatedTogether(t *testing.T) {
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", string(selfSignedPEM(t)))
	notPEM := writeFile(t, dir, "ca.txt", "not a certificate")
	const fp = "a5f0c1d2e3f405162738495a6b7c8d9eafb0c1d2e3f405162738495a6b7c8d9e"
	cloudID := "prod:" + base64.StdEncoding.EncodeToString([]byte("eu-west-1.aws.found.io$abc123$def456"))
	https := "https://es1:9200,https://es2:9200"
	tests := []struct {
		name      string
		vars      map[string]string
		wantNamed []string // variables the error must name; none means valid
	}{
		{"defaults", nil, nil},
		{"basic auth over TLS with a CA file", map[string]string{"ELASTICSEARCH_URL": https, "ELASTICSEARCH_USERNAME": "u", "ELASTICSEARCH_PASSWORD": "p", "ELASTICSEARCH_CA_CERT": ca}, nil},
		{"API key with a fingerprint", map[string]string{"ELASTICSEARCH_URL": https, "ELASTICSEARCH_API_KEY": "a2V5", "ELASTICSEARCH_CA_FINGERPRINT": fp}, nil},
		{"Cloud ID instead of addresses", map[string]string{"ELASTIC_CLOUD_ID": cloudID, "ELASTICSEARCH_API_KEY": "a2V5"}, nil},
		{"explicit insecure opt-in", map[string]string{"ELASTICSEARCH_URL": https, "ELASTICSEARCH_INSECURE_SKIP_VERIFY": "true"}, nil},
		{"user without password", map[string]string{"ELASTICSEARCH_USERNAME": "u"}, []string{"ELASTICSEARCH_PASSWORD"}},
		{"password without user", map[string]string{"ELASTICSEARCH_PASSWORD": "p"}, []string{"ELASTICSEARCH_USERNAME"}},
		{"API key and user", map[string]string{"ELASTICSEARCH_API_KEY": "a2V5", "ELASTICSEARCH_USERNAME": "u", "ELASTICSEARCH_PASSWORD": "p"}, []string{"ELASTICSEARCH_API_KEY"}},
		{"API key as id:key", map[string]string{"ELASTICSEARCH_API_KEY": "VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw"}, []string{"ELASTICSEARCH_API_KEY"}},
		{"CA file and fingerprint", map[string]string{"ELASTICSEARCH_URL": https, "ELASTICSEARCH_CA_CERT": ca, "ELASTICSEARCH_CA_FINGERPRINT": fp}, []string{"ELASTICSEARCH_CA_CERT"}},
		{"insecure and a CA file", map[string]string{"ELASTICSEARCH_URL": https, "ELASTICSEARCH_CA_CERT": ca, "ELASTICSEARCH_INSECURE_SKIP_VERIFY": "true"}, []string{"ELASTICSEARCH_CA_CERT"}},
		{"a CA for plain-HTTP addresses", map[string]string{"ELASTICSEARCH_CA_CERT": ca}, []string{"ELASTICSEARCH_URL"}},
		{"a CA file that is no PEM", map[string]string{"ELASTICSEARCH_URL": https, "ELASTICSEARCH_CA_CERT": notPEM}, []string{"ELASTICSEARCH_CA_CERT"}},
		{"a malformed fingerprint", map[string]string{"ELASTICSEARCH_URL": https, "ELASTICSEARCH_CA_FINGERPRINT": "12:34"}, []string{"ELASTICSEARCH_CA_FINGERPRINT"}},
		{"Cloud ID and addresses", map[string]string{"ELASTIC_CLOUD_ID": cloudID, "ELASTICSEARCH_URL": https}, []string{"ELASTICSEARCH_URL"}},
		{"a malformed Cloud ID", map[string]string{"ELASTIC_CLOUD_ID": "prod-no-colon"}, []string{"ELASTIC_CLOUD_ID"}},
		{"insecure opt-in that is not a boolean", map[string]string{"ELASTICSEARCH_INSECURE_SKIP_VERIFY": "yes please"}, []string{"ELASTICSEARCH_INSECURE_SKIP_VERIFY"}},
		{"negative start-up wait", map[string]string{"ELASTICSEARCH_STARTUP_TIMEOUT": "-1s"}, []string{"ELASTICSEARCH_STARTUP_TIMEOUT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadBackend(env(tt.vars))
			checkNamed(t, "LoadBackend", tt.vars, err, tt.wantNamed)
		})
	}
}

func TestCloudIDReplacesTheDefaultAddress(t *testing.T) {
	cloudID := "prod:" + base64.StdEncoding.EncodeToString([]byte("eu-west-1.aws.found.io$abc123$def456"))
	cfg, err := LoadIngester(env(map[string]string{"ELASTIC_CLOUD_ID": cloudID}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Elasticsearch.Addresses != nil || cfg.Elasticsearch.CloudID != cloudID {
		t.Errorf("URLs = %q, CloudID = %q; want no URLs and the Cloud ID", cfg.Elasticsearch.Addresses, cfg.Elasticsearch.CloudID)
	}
}

func TestFingerprintAndCACertificateAreReadyForTheClient(t *testing.T) {
	pemBytes := selfSignedPEM(t)
	ca := writeFile(t, t.TempDir(), "ca.pem", string(pemBytes))
	cfg, err := LoadBackend(env(map[string]string{"ELASTICSEARCH_URL": "https://es:9200", "ELASTICSEARCH_CA_CERT": ca}))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Elasticsearch.CACert, pemBytes) {
		t.Errorf("CACert is not the content of %s", ca)
	}
	cfg, err = LoadBackend(env(map[string]string{"ELASTICSEARCH_URL": "https://es:9200", "ELASTICSEARCH_CA_FINGERPRINT": "SHA256 Fingerprint=" + strings.Repeat("AB:", 31) + "AB"}))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Repeat("ab", 32); cfg.Elasticsearch.CAFingerprint != want {
		t.Errorf("CAFingerprint = %q, want %q", cfg.Elasticsearch.CAFingerprint, want)
	}
}

func TestCredentialsInAnAddressAreRefusedWithoutEchoingThem(t *testing.T) {
	_, err := LoadIngester(env(map[string]string{
		"ELASTICSEARCH_URL": "https://elastic:hunter2@es1:9200",
		"NATS_URL":          "nats://app:swordfish@nats1:4222,nats://nats2:4222",
	}))
	if err == nil {
		t.Fatal("accepted credentials in addresses")
	}
	msg := err.Error()
	for _, want := range []string{"ELASTICSEARCH_URL: https://elastic:xxxxx@es1:9200 holds credentials", "NATS_URL: nats://app:xxxxx@nats1:4222 holds credentials"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not say %q:\n%s", want, msg)
		}
	}
	for _, secret := range []string{"hunter2", "swordfish"} {
		if strings.Contains(msg, secret) {
			t.Errorf("error echoes %q:\n%s", secret, msg)
		}
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// selfSignedPEM is a throwaway CA certificate, for settings that must parse one.
func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "config test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
