package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestBackendTLSModesRequireTheirSettings(t *testing.T) {
	tests := []struct {
		name      string
		vars      map[string]string
		wantNamed []string // variables the error must name; none means valid
	}{
		{"off needs nothing", map[string]string{"TLS_MODE": "off"}, nil},
		{"file needs both files", map[string]string{"TLS_MODE": "file"}, []string{"TLS_CERT_FILE", "TLS_KEY_FILE"}},
		{"file with both files", map[string]string{"TLS_MODE": "file", "TLS_CERT_FILE": "/c.pem", "TLS_KEY_FILE": "/k.pem"}, nil},
		{"autocert needs domains", map[string]string{"TLS_MODE": "autocert"}, []string{"TLS_DOMAINS"}},
		{"autocert with a domain", map[string]string{"TLS_MODE": "autocert", "TLS_DOMAINS": "api.example.com"}, nil},
		{"autocert rejects a URL as a domain", map[string]string{"TLS_MODE": "autocert", "TLS_DOMAINS": "https://api.example.com"}, []string{"TLS_DOMAINS"}},
		{"autocert rejects a wildcard domain", map[string]string{"TLS_MODE": "autocert", "TLS_DOMAINS": "*.example.com"}, []string{"TLS_DOMAINS"}},
		{"autocert rejects a plain-HTTP directory", map[string]string{"TLS_MODE": "autocert", "TLS_DOMAINS": "a.example", "ACME_DIRECTORY_URL": "http://ca.example/dir"}, []string{"ACME_DIRECTORY_URL"}},
		{"autocert rejects a bad challenge address", map[string]string{"TLS_MODE": "autocert", "TLS_DOMAINS": "a.example", "ACME_HTTP_ADDR": "80"}, []string{"ACME_HTTP_ADDR"}},
		{"autocert rejects a bad e-mail", map[string]string{"TLS_MODE": "autocert", "TLS_DOMAINS": "a.example", "ACME_EMAIL": "ops"}, []string{"ACME_EMAIL"}},
		// Settings of another mode are ignored, so one env file can be switched by TLS_MODE alone.
		{"off ignores autocert settings", map[string]string{"TLS_MODE": "off", "ACME_HTTP_ADDR": "80"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadBackend(env(tt.vars))
			checkNamed(t, "LoadBackend", tt.vars, err, tt.wantNamed)
		})
	}
}

func TestBackendProtectionSettingsAreValidatedTogether(t *testing.T) {
	_, err := LoadBackend(env(map[string]string{
		"API_KEYS":             "too-short,a-long-enough-key-0123",
		"CORS_ALLOWED_ORIGINS": "https://app.example.com,https://app.example.com/path",
		"RATE_LIMIT_REQUESTS":  "-1",
		"RATE_LIMIT_WINDOW":    "0s",
		"TRUSTED_PROXIES":      "10.0.0.0/8,10.0.0.1",
		"API_MAX_RANGE":        "-1h",
		"API_MAX_STREAMS":      "0",
		"STREAM_STALL_TIMEOUT": "2m",
		"STREAM_MIN_RATE":      "0",
		"LISTEN_ADDR":          "5000",
	}))
	if err == nil {
		t.Fatal("LoadBackend accepted ten bad variables")
	}
	msg := err.Error()
	for _, want := range []string{
		"API_KEYS: key #1 is shorter than 16 characters",
		`CORS_ALLOWED_ORIGINS: "https://app.example.com/path"`,
		"RATE_LIMIT_REQUESTS",
		"RATE_LIMIT_WINDOW",
		`TRUSTED_PROXIES: "10.0.0.1"`,
		"API_MAX_RANGE",
		"API_MAX_STREAMS",
		"STREAM_STALL_TIMEOUT",
		"STREAM_MIN_RATE: must be at least 1 byte a second, got 0",
		"LISTEN_ADDR",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "too-short") || strings.Contains(msg, "a-long-enough-key-0123") {
		t.Errorf("error echoes an API key:\n%s", msg)
	}
	if strings.Contains(msg, "key #2") {
		t.Errorf("error complains about the valid second key:\n%s", msg)
	}
}

func TestBackendAcceptsTheOriginFormsCORSUnderstands(t *testing.T) {
	for _, o := range []string{"*", "https://app.example.com", "http://localhost:3000", "https://*.example.com"} {
		if !validOrigin(o) {
			t.Errorf("validOrigin(%q) = false, want true", o)
		}
	}
	for _, o := range []string{"app.example.com", "https://app.example.com/", "ftp://x", "https://*.*.example.com", "https://u@x.example"} {
		if validOrigin(o) {
			t.Errorf("validOrigin(%q) = true, want false", o)
		}
	}
}

func TestAPIKeysAreSecret(t *testing.T) {
	for _, v := range BackendVars(&Backend{}) {
		if v.Name == "API_KEYS" && !v.Secret {
			t.Fatal("API_KEYS is not marked Secret")
		}
	}
}

// checkNamed asserts what a load of vars returned: no error when wantNamed is empty,
// else an error naming each variable in it (as "NAME: …" or "NAME=…: …").
func checkNamed(t *testing.T, load string, vars map[string]string, err error, wantNamed []string) {
	t.Helper()
	if len(wantNamed) == 0 {
		if err != nil {
			t.Fatalf("%s(%v): %v", load, vars, err)
		}
		return
	}
	if err == nil {
		t.Fatalf("%s(%v) accepted it, want an error naming %v", load, vars, wantNamed)
	}
	for _, name := range wantNamed {
		if !strings.Contains(err.Error(), name+":") && !strings.Contains(err.Error(), name+"=") {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
}

func TestBackendNATSIsOptionalButItsSettingsNeedIt(t *testing.T) {
	tests := []struct {
		name      string
		vars      map[string]string
		wantNamed []string
	}{
		{"no NATS at all", map[string]string{}, nil},
		{"NATS with follow settings", map[string]string{"NATS_URL": "nats://nats:4222", "FOLLOW_HEARTBEAT": "5s", "NATS_DURABLE": "ingest"}, nil},
		{"credentials without a server", map[string]string{"NATS_USER": "backend", "NATS_PASSWORD": "pw"}, []string{"NATS_USER", "NATS_PASSWORD"}},
		{"follow settings without a server", map[string]string{"FOLLOW_HEARTBEAT": "5s", "API_MAX_FOLLOWERS": "2"}, []string{"FOLLOW_HEARTBEAT", "API_MAX_FOLLOWERS"}},
		{"a bad server address", map[string]string{"NATS_URL": "http://nats:4222"}, []string{"NATS_URL"}},
		{"followers beyond the streams", map[string]string{"NATS_URL": "nats://nats:4222", "API_MAX_STREAMS": "4", "API_MAX_FOLLOWERS": "5"}, []string{"API_MAX_FOLLOWERS"}},
		{"a heartbeat too eager", map[string]string{"NATS_URL": "nats://nats:4222", "FOLLOW_HEARTBEAT": "10ms"}, []string{"FOLLOW_HEARTBEAT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadBackend(env(tt.vars))
			checkNamed(t, "LoadBackend", tt.vars, err, tt.wantNamed)
			if err == nil && cfg.NATS.Enabled() != (tt.vars["NATS_URL"] != "") {
				t.Errorf("NATS.Enabled() = %v with NATS_URL=%q", cfg.NATS.Enabled(), tt.vars["NATS_URL"])
			}
		})
	}
}

func TestBackendSharedCertificateCacheNeedsNATSAndAKey(t *testing.T) {
	dir := t.TempDir()
	goodKey, shortKey := dir+"/good.hex", dir+"/short.hex"
	os.WriteFile(goodKey, []byte(strings.Repeat("0f", 32)+"\n"), 0o600)
	os.WriteFile(shortKey, []byte(strings.Repeat("0f", 16)), 0o600)
	autocert := func(extra map[string]string) map[string]string {
		vars := map[string]string{"TLS_MODE": "autocert", "TLS_DOMAINS": "api.example.com"}
		for k, v := range extra {
			vars[k] = v
		}
		return vars
	}
	tests := []struct {
		name      string
		vars      map[string]string
		wantNamed []string
	}{
		{"dir is the default and needs no NATS", autocert(nil), nil},
		{"nats with NATS_URL and a key", autocert(map[string]string{"TLS_CACHE": "nats", "NATS_URL": "nats://nats:4222", "TLS_CACHE_KEY_FILE": goodKey}), nil},
		{"nats without NATS_URL", autocert(map[string]string{"TLS_CACHE": "nats", "TLS_CACHE_KEY_FILE": goodKey}), []string{"NATS_URL"}},
		{"nats without a key", autocert(map[string]string{"TLS_CACHE": "nats", "NATS_URL": "nats://nats:4222"}), []string{"TLS_CACHE_KEY_FILE"}},
		{"nats with a 128-bit key", autocert(map[string]string{"TLS_CACHE": "nats", "NATS_URL": "nats://nats:4222", "TLS_CACHE_KEY_FILE": shortKey}), []string{"TLS_CACHE_KEY_FILE"}},
		{"nats with a missing key file", autocert(map[string]string{"TLS_CACHE": "nats", "NATS_URL": "nats://nats:4222", "TLS_CACHE_KEY_FILE": dir + "/none"}), []string{"TLS_CACHE_KEY_FILE"}},
		{"nats with a lease too short", autocert(map[string]string{"TLS_CACHE": "nats", "NATS_URL": "nats://nats:4222", "TLS_CACHE_KEY_FILE": goodKey, "TLS_CACHE_LEASE_TTL": "10ms"}), []string{"TLS_CACHE_LEASE_TTL"}},
		{"an unknown cache", autocert(map[string]string{"TLS_CACHE": "redis"}), []string{"TLS_CACHE"}},
		{"nats settings with the dir cache", autocert(map[string]string{"TLS_CACHE_KEY_FILE": goodKey}), []string{"TLS_CACHE_KEY_FILE"}},
		{"nats without autocert", map[string]string{"TLS_CACHE": "nats", "NATS_URL": "nats://nats:4222", "TLS_CACHE_KEY_FILE": goodKey}, []string{"TLS_CACHE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadBackend(env(tt.vars))
			checkNamed(t, "LoadBackend", tt.vars, err, tt.wantNamed)
			if err == nil && tt.vars["TLS_CACHE"] == "nats" && len(cfg.TLSCache.Key) != 32 {
				t.Errorf("key of %d bytes read from TLS_CACHE_KEY_FILE, want 32", len(cfg.TLSCache.Key))
			}
		})
	}
}

func TestBackendPointInTimeTimeoutReachesTheStore(t *testing.T) {
	cfg, err := LoadBackend(env(map[string]string{"ELASTICSEARCH_PIT_TIMEOUT": "30s"}))
	if err != nil || cfg.Elasticsearch.PITTimeout != 30*time.Second {
		t.Errorf("ELASTICSEARCH_PIT_TIMEOUT=30s: %s, %v; want 30s", cfg.Elasticsearch.PITTimeout, err)
	}
	if cfg, err = LoadBackend(env(nil)); err != nil || cfg.Elasticsearch.PITTimeout != 10*time.Second {
		t.Errorf("unset: %s, %v; want the default 10s", cfg.Elasticsearch.PITTimeout, err)
	}
	if _, err := LoadBackend(env(map[string]string{"ELASTICSEARCH_PIT_TIMEOUT": "0s"})); err == nil || !strings.Contains(err.Error(), "ELASTICSEARCH_PIT_TIMEOUT") {
		t.Errorf("ELASTICSEARCH_PIT_TIMEOUT=0s: %v, want it refused", err)
	}
}
