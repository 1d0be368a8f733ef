package config

import (
	"strings"
	"testing"
	"time"
)

func TestTheTimestampWindowIsReadInDaysOrAsADurationAndOffIsNoBound(t *testing.T) {
	for raw, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "36h": 36 * time.Hour, "off": 0, "0": 0} {
		cfg, err := LoadIngester(env(map[string]string{"TIMESTAMP_MAX_PAST": raw, "TIMESTAMP_MAX_FUTURE": raw}))
		if err != nil || cfg.TimestampMaxPast != want || cfg.TimestampMaxFuture != want {
			t.Errorf("TIMESTAMP_MAX_PAST and _FUTURE=%q: %v and %v, %v; want %v", raw, cfg.TimestampMaxPast, cfg.TimestampMaxFuture, err, want)
		}
	}
}

func TestABadTimestampWindowIsRefusedByName(t *testing.T) {
	for _, raw := range []string{"a month", "-1d", "-5h", "30", "999999999d"} {
		_, err := LoadIngester(env(map[string]string{"TIMESTAMP_MAX_PAST": raw, "TIMESTAMP_MAX_FUTURE": raw}))
		for _, name := range []string{"TIMESTAMP_MAX_PAST", "TIMESTAMP_MAX_FUTURE"} {
			if err == nil || strings.Count(err.Error(), name+":") != 1 {
				t.Errorf("%s=%q: error %v, want it named once", name, raw, err)
			}
		}
	}
}
