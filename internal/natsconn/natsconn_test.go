package natsconn

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/annotated-data/pipeline/internal/config"
)

func TestReconnectDelayDoublesFrom100msToAtMost5sWithJitter(t *testing.T) {
	tests := []struct {
		attempts int
		base     time.Duration
	}{
		{0, 100 * time.Millisecond}, {1, 200 * time.Millisecond}, {2, 400 * time.Millisecond},
		{5, 3200 * time.Millisecond}, {6, 5 * time.Second}, {7, 5 * time.Second}, {40, 5 * time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			if d := reconnectDelay(tt.attempts); d < tt.base || d > tt.base+tt.base/5 {
				t.Fatalf("reconnectDelay(%d) = %s, want between %s and %s", tt.attempts, d, tt.base, tt.base+tt.base/5)
			}
		}
	}
}

func TestOnlyUnreachableServersAreWorthWaitingFor(t *testing.T) {
	cfg := config.NATS{URLs: []string{"nats://n1:4222", "nats://n2:4222"}, User: "ingest", Password: "s3cret-pass"}
	tests := []struct {
		err       error
		wait      bool
		wantInMsg string
	}{
		{nats.ErrNoServers, true, "nats unreachable at nats://n1:4222, nats://n2:4222"},
		{nats.ErrAuthorization, false, `refused the credentials (authorization violation): check NATS_USER ("ingest") and NATS_PASSWORD`},
		{nats.ErrAuthExpired, false, "they have expired"},
		{nats.ErrAuthRevoked, false, "they were revoked"},
		{fmt.Errorf("%w: %w", nats.ErrTLS, x509.UnknownAuthorityError{}), false, "signed by an unknown authority"},
		{nats.ErrSecureConnWanted, false, "does not offer TLS"},
	}
	for _, tt := range tests {
		err := explain(tt.err, cfg)
		var unreachable unreachableError
		if got := errors.As(err, &unreachable); got != tt.wait {
			t.Errorf("explain(%v): worth waiting = %v, want %v", tt.err, got, tt.wait)
		}
		if !strings.Contains(err.Error(), tt.wantInMsg) {
			t.Errorf("explain(%v) = %q, want it to say %q", tt.err, err, tt.wantInMsg)
		}
		if strings.Contains(err.Error(), cfg.Password) {
			t.Errorf("explain(%v) shows the password: %q", tt.err, err)
		}
	}
}
