package config

import (
	"strings"
	"testing"
	"time"
)

func TestRetentionIsOffByDefaultAndReadInDaysOrAsADuration(t *testing.T) {
	for raw, want := range map[string]time.Duration{"": 0, "off": 0, "0": 0, "30d": 30 * 24 * time.Hour, "720h": 720 * time.Hour} {
		cfg, err := LoadIngester(env(map[string]string{"ES_RETENTION": raw}))
		if err != nil || cfg.Upkeep.Retention != want {
			t.Errorf("ES_RETENTION=%q: %v, %v; want %v", raw, cfg.Upkeep.Retention, err, want)
		}
	}
	cfg, err := LoadIngester(env(nil))
	if err != nil || cfg.Upkeep.AuditInterval != 0 || cfg.Upkeep.AuditWindow != 24*time.Hour {
		t.Errorf("audit defaults: interval %v, window %v, %v; want off and 24h", cfg.Upkeep.AuditInterval, cfg.Upkeep.AuditWindow, err)
	}
}

func TestBadRetentionAndAuditSettingsAreRefusedByName(t *testing.T) {
	_, err := LoadIngester(env(map[string]string{"ES_RETENTION": "a month", "AUDIT_INTERVAL": "-1h", "AUDIT_WINDOW": "0s"}))
	for _, name := range []string{"ES_RETENTION", "AUDIT_INTERVAL", "AUDIT_WINDOW"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
}
