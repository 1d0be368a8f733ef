package config

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

// env returns a getenv that reads only the given variables.
func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestDefaultsAreValid(t *testing.T) {
	t.Run("webserver", func(t *testing.T) {
		cfg, err := LoadIngester(env(nil))
		if err != nil {
			t.Fatalf("LoadIngester with no variables set: %v", err)
		}
		checks := []struct {
			what      string
			got, want any
		}{
			{"NATS.URLs", cfg.NATS.URLs, []string{"nats://127.0.0.1:4222"}},
			{"Stream", cfg.Stream, "ANNOTATIONS"},
			{"Subjects", cfg.Subjects, []string{"annotations.>"}},
			{"Durable", cfg.Durable, "webserver"},
			{"DLQStream", cfg.DLQStream, "ANNOTATIONS_DLQ"},
			{"MaxAckPending", cfg.MaxAckPending, 5000 * (2 + 2)},
			{"Elasticsearch.Addresses", cfg.Elasticsearch.Addresses, []string{"http://127.0.0.1:9200"}},
			{"Elasticsearch.IndexPrefix", cfg.Elasticsearch.IndexPrefix, "annotations"},
			{"TimestampField", cfg.TimestampField, "timestamp"},
			{"DefaultZone", cfg.DefaultZone.String(), "UTC"},
			{"TimestampMaxPast", cfg.TimestampMaxPast, 30 * 24 * time.Hour},
			{"TimestampMaxFuture", cfg.TimestampMaxFuture, 24 * time.Hour},
			{"BulkMaxDocs", cfg.BulkMaxDocs, 5000},
			{"BulkWorkers", cfg.BulkWorkers, 2},
			{"Index.Interval", cfg.Index.Interval, "day"},
			{"BulkMaxWait", cfg.BulkMaxWait, time.Second},
			{"AdminAddr", cfg.AdminAddr, ":8081"},
			{"ShutdownTimeout", cfg.ShutdownTimeout, 30 * time.Second},
			{"Logging.Level", cfg.Logging.Level.String(), "INFO"},
		}
		for _, c := range checks {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("%s = %#v, want %#v", c.what, c.got, c.want)
			}
		}
	})
	t.Run("backend", func(t *testing.T) {
		cfg, err := LoadBackend(env(nil))
		if err != nil {
			t.Fatalf("LoadBackend with no variables set: %v", err)
		}
		checks := []struct {
			what      string
			got, want any
		}{
			{"ListenAddr", cfg.ListenAddr, ":5000"},
			{"TLS.Mode", cfg.TLS.Mode, "off"},
			{"TLS.CacheDir", cfg.TLS.CacheDir, "/var/lib/backend/autocert"},
			{"TLS.ACMEDirectoryURL", cfg.TLS.ACMEDirectoryURL, "https://acme-v02.api.letsencrypt.org/directory"},
			{"TLS.ACMEHTTPAddr", cfg.TLS.ACMEHTTPAddr, ":80"},
			{"Elasticsearch.Addresses", cfg.Elasticsearch.Addresses, []string{"http://127.0.0.1:9200"}},
			{"Elasticsearch.IndexPrefix", cfg.Elasticsearch.IndexPrefix, "annotations"},
			{"PageSize", cfg.PageSize, 10000},
			{"FirstPageSize", cfg.FirstPageSize, 1000},
			{"ExportSlices", cfg.ExportSlices, 1},
			{"DefaultZone", cfg.DefaultZone.String(), "UTC"},
			{"MaxRange", cfg.MaxRange, time.Duration(0)},
			{"MaxStreams", cfg.MaxStreams, 32},
			{"StallTimeout", cfg.StallTimeout, 30 * time.Second},
			{"MinRate", cfg.MinRate, 16384},
			{"APIKeys", cfg.APIKeys, []string(nil)},
			{"CORSOrigins", cfg.CORSOrigins, []string(nil)},
			{"RateLimit", cfg.RateLimit, 120},
			{"RateWindow", cfg.RateWindow, time.Minute},
			{"TrustedProxies", cfg.TrustedProxies, []string(nil)},
			{"ShutdownTimeout", cfg.ShutdownTimeout, 30 * time.Second},
			{"Logging.Level", cfg.Logging.Level.String(), "INFO"},
		}
		for _, c := range checks {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("%s = %#v, want %#v", c.what, c.got, c.want)
			}
		}
	})
}

func TestAFirstPageLargerThanThePageSizeIsRefused(t *testing.T) {
	_, err := LoadBackend(env(map[string]string{"API_PAGE_SIZE": "5000", "API_FIRST_PAGE_SIZE": "6000"}))
	if err == nil || !strings.Contains(err.Error(), "API_FIRST_PAGE_SIZE") {
		t.Fatalf("LoadBackend accepted a first page of 6000 with pages of 5000: %v", err)
	}
}

func TestSmallPagesSetBeforeTheFirstPageSizeExistedKeepTheirSize(t *testing.T) {
	cfg, err := LoadBackend(env(map[string]string{"API_PAGE_SIZE": "100"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PageSize != 100 || cfg.FirstPageSize != 100 {
		t.Errorf("pages of %d, the first of %d; want 100 and 100", cfg.PageSize, cfg.FirstPageSize)
	}
}

func TestEveryProblemIsReportedAtOnce(t *testing.T) {
	_, err := LoadIngester(env(map[string]string{
		"BULK_MAX_DOCS":          "abc",
		"NATS_URL":               "http://x",
		"TIMESTAMP_DEFAULT_ZONE": "Mars/Base",
		"ES_INDEX_PREFIX":        "UPPER",
		"LOG_LEVEL":              "loud",
	}))
	if err == nil {
		t.Fatal("LoadIngester accepted five bad variables")
	}
	msg := err.Error()
	for _, name := range []string{"BULK_MAX_DOCS", "NATS_URL", "TIMESTAMP_DEFAULT_ZONE", "ES_INDEX_PREFIX", "LOG_LEVEL"} {
		if !strings.Contains(msg, name) {
			t.Errorf("error does not name %s:\n%s", name, msg)
		}
	}
	// A variable that did not parse is reported once: its range checks (> 0, and
	// <= NATS_MAX_ACK_PENDING) would only repeat the problem.
	if n := strings.Count(msg, "BULK_MAX_DOCS"); n != 1 {
		t.Errorf("BULK_MAX_DOCS is reported %d times, want once:\n%s", n, msg)
	}
	// Variables that are fine are not mentioned.
	for _, name := range []string{"NATS_STREAM", "NATS_DURABLE", "BULK_MAX_WAIT", "SHUTDOWN_TIMEOUT"} {
		if strings.Contains(msg, name) {
			t.Errorf("error names %s, which was valid:\n%s", name, msg)
		}
	}

	t.Run("backend", func(t *testing.T) {
		_, err := LoadBackend(env(map[string]string{
			"TLS_MODE":             "on",
			"API_PAGE_SIZE":        "0",
			"API_EXPORT_SLICES":    "9",
			"API_DEFAULT_TIMEZONE": "Mars/Base",
			"ELASTICSEARCH_URL":    "ftp://es:9200",
			"SHUTDOWN_TIMEOUT":     "soon",
		}))
		if err == nil {
			t.Fatal("LoadBackend accepted six bad variables")
		}
		msg := err.Error()
		for _, name := range []string{"TLS_MODE", "API_PAGE_SIZE", "API_EXPORT_SLICES", "API_DEFAULT_TIMEZONE", "ELASTICSEARCH_URL", "SHUTDOWN_TIMEOUT"} {
			if !strings.Contains(msg, name) {
				t.Errorf("error does not name %s:\n%s", name, msg)
			}
		}
		if n := strings.Count(msg, "SHUTDOWN_TIMEOUT"); n != 1 {
			t.Errorf("SHUTDOWN_TIMEOUT is reported %d times, want once:\n%s", n, msg)
		}
	})
}

func TestCommaSeparatedListsAreSplit(t *testing.T) {
	tests := []struct {
		raw  string
		want []string
	}{
		{"http://es1:9200", []string{"http://es1:9200"}},
		{"http://es1:9200, https://es2:9200", []string{"http://es1:9200", "https://es2:9200"}},
		{" http://es1:9200 ,,https://es2:9200 , ", []string{"http://es1:9200", "https://es2:9200"}},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			cfg, err := LoadBackend(env(map[string]string{"ELASTICSEARCH_URL": tt.raw}))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.Elasticsearch.Addresses, tt.want) {
				t.Errorf("ELASTICSEARCH_URL=%q gives %q, want %q", tt.raw, cfg.Elasticsearch.Addresses, tt.want)
			}
		})
	}
	t.Run("a list of only commas names no server", func(t *testing.T) {
		_, err := LoadBackend(env(map[string]string{"ELASTICSEARCH_URL": " , ,"}))
		if err == nil || !strings.Contains(err.Error(), "ELASTICSEARCH_URL") {
			t.Errorf("ELASTICSEARCH_URL=\" , ,\": err = %v, want one naming ELASTICSEARCH_URL", err)
		}
	})
}

func TestUsageListsEveryVariableWithItsDefault(t *testing.T) {
	for _, tt := range []struct {
		binary string
		vars   []Var
	}{
		{"webserver", IngesterVars(&Ingester{})},
		{"backend", BackendVars(&Backend{})},
	} {
		t.Run(tt.binary, func(t *testing.T) {
			var buf bytes.Buffer
			WriteUsage(&buf, tt.vars)
			// One row per variable: NAME  DEFAULT  MEANING.
			defaults := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n")[1:] {
				if f := strings.Fields(line); len(f) >= 2 {
					defaults[f[0]] = f[1]
				}
			}
			names := Names(tt.vars)
			if len(names) != len(tt.vars) {
				t.Fatalf("Names returned %d names for %d variables", len(names), len(tt.vars))
			}
			for i, name := range names {
				want := tt.vars[i].Default
				if want == "" {
					want = "-"
				}
				got, ok := defaults[name]
				if !ok {
					t.Errorf("usage does not list %s:\n%s", name, buf.String())
					continue
				}
				if got != want {
					t.Errorf("usage lists %s with default %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestSecretValuesAreNeverEchoed(t *testing.T) {
	var port, n int
	getenv := env(map[string]string{"X_PASSWORD": "hunter2", "X_COUNT": "many"})
	c := load(getenv, []Var{
		{Name: "X_PASSWORD", Secret: true, target: &port},
		{Name: "X_COUNT", target: &n},
	})
	err := c.err()
	if err == nil {
		t.Fatal("load accepted two unparseable integers")
	}
	msg := err.Error()
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error echoes the secret value:\n%s", msg)
	}
	if !strings.Contains(msg, "X_PASSWORD") {
		t.Errorf("error does not name X_PASSWORD:\n%s", msg)
	}
	// A value that is not secret is quoted, to help the operator.
	if !strings.Contains(msg, `X_COUNT="many"`) {
		t.Errorf("error does not quote the non-secret value of X_COUNT:\n%s", msg)
	}
}

func TestMaxAckPendingFollowsTheBulkSettingsUnlessSet(t *testing.T) {
	cfg, err := LoadIngester(env(map[string]string{"BULK_MAX_DOCS": "500", "BULK_WORKERS": "3"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxAckPending != 500*(3+2) {
		t.Errorf("derived MaxAckPending = %d, want %d", cfg.MaxAckPending, 500*(3+2))
	}
	cfg, err = LoadIngester(env(map[string]string{"NATS_MAX_ACK_PENDING": "12345"}))
	if err != nil || cfg.MaxAckPending != 12345 {
		t.Errorf("explicit MaxAckPending = %d, %v; want 12345", cfg.MaxAckPending, err)
	}
	if _, err := LoadIngester(env(map[string]string{"NATS_MAX_ACK_PENDING": "10", "BULK_MAX_DOCS": "100"})); err == nil || !strings.Contains(err.Error(), "BULK_MAX_DOCS") {
		t.Errorf("a batch larger than MaxAckPending: err = %v, want it named", err)
	}
}

func TestTheDeadLetterPrefixMustNotCatchTheConsumedSubjects(t *testing.T) {
	for _, tt := range []struct {
		prefix, subjects string
		ok               bool
	}{
		{"dlq", "annotations.>", true},
		{"lidar.dlq", "lidar.frames.>", true},
		{"annotations", "annotations.>", false},
		{"annotations.dlq", "annotations.>", false},
		{"x", "*.cam", false},
		{"dlq", "dlq.>,annotations.>", false},
		{"dlq.*", "annotations.>", false},
		{"dlq..x", "annotations.>", false},
	} {
		_, err := LoadIngester(env(map[string]string{"NATS_DLQ_SUBJECT_PREFIX": tt.prefix, "NATS_SUBJECTS": tt.subjects}))
		if got := err == nil; got != tt.ok || !tt.ok && !strings.Contains(err.Error(), "NATS_DLQ_SUBJECT_PREFIX") {
			t.Errorf("prefix %q with NATS_SUBJECTS %q: %v, want valid: %v", tt.prefix, tt.subjects, err, tt.ok)
		}
	}
}

func TestTheDeadLetterStreamAndPrefixFollowTheStreamUnlessSet(t *testing.T) {
	for _, tt := range []struct {
		env              map[string]string
		stream, dlq, pfx string
	}{
		// The first pipeline keeps the names existing deployments have.
		{map[string]string{}, "ANNOTATIONS", "ANNOTATIONS_DLQ", "dlq"},
		// Naming its stream is enough for a second one to keep its dead letters apart.
		{map[string]string{"NATS_STREAM": "LIDAR", "NATS_SUBJECTS": "lidar.>"}, "LIDAR", "LIDAR_DLQ", "lidar_dlq"},
		// So is naming its dead-letter stream alone.
		{map[string]string{"NATS_DLQ_STREAM": "ANNOTATIONS_REPLAY_DLQ"}, "ANNOTATIONS", "ANNOTATIONS_REPLAY_DLQ", "annotations_replay_dlq"},
		{map[string]string{"NATS_STREAM": "LIDAR", "NATS_SUBJECTS": "lidar.>", "NATS_DLQ_SUBJECT_PREFIX": "lidar-dead"}, "LIDAR", "LIDAR_DLQ", "lidar-dead"},
	} {
		cfg, err := LoadIngester(env(tt.env))
		if err != nil {
			t.Errorf("%v: %v", tt.env, err)
			continue
		}
		if cfg.Stream != tt.stream || cfg.DLQStream != tt.dlq || cfg.DLQSubjectPrefix != tt.pfx {
			t.Errorf("%v: stream %s, dead letters in %s on %s.>; want %s, %s, %s.>", tt.env, cfg.Stream, cfg.DLQStream, cfg.DLQSubjectPrefix, tt.stream, tt.dlq, tt.pfx)
		}
	}
}
