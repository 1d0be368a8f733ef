package natsconn

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/annotated-data/pipeline/internal/dial"
)

func TestConnectFailuresAreClassifiedSoOnlyUnreachableServersAreWaitedFor(t *testing.T) {
	cfg := Config{URLs: []string{"nats://n1:4222", "nats://n2:4222"}, User: "ingest", Password: "s3cret-pass"}
	refused := func(err error) bool { var r *dial.RefusedError; return errors.As(err, &r) }
	untrusted := func(err error) bool { var u *dial.UntrustedError; return errors.As(err, &u) }
	noTLS := func(err error) bool { return errors.Is(err, ErrNoTLS) }
	tests := []struct {
		name string
		err  error
		is   func(error) bool
		wait bool
	}{
		{"no server answers", nats.ErrNoServers, dial.IsTemporary, true},
		{"wrong credentials", nats.ErrAuthorization, refused, false},
		{"expired credentials", nats.ErrAuthExpired, refused, false},
		{"revoked credentials", nats.ErrAuthRevoked, refused, false},
		{"an unknown CA", fmt.Errorf("%w: %w", nats.ErrTLS, x509.UnknownAuthorityError{}), untrusted, false},
		{"a server without TLS", nats.ErrSecureConnWanted, noTLS, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := explain(tt.err, cfg)
			if !tt.is(err) {
				t.Errorf("explain(%v) = %#v, not of the expected kind", tt.err, err)
			}
			if got := dial.IsTemporary(err); got != tt.wait {
				t.Errorf("explain(%v): worth waiting = %v, want %v", tt.err, got, tt.wait)
			}
			if s := err.Error(); s == "" || strings.Contains(s, cfg.Password) {
				t.Errorf("explain(%v) = %q: empty, or shows the password", tt.err, s)
			}
		})
	}
	if explain(nil, cfg) != nil {
		t.Error("explain(nil) is not nil")
	}
}
