package dial_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/dial"
	"github.com/annotated-data/pipeline/internal/testenv"
)

func TestBackoffGrowsExponentiallyWithJitterUpToItsCeiling(t *testing.T) {
	b := dial.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	tests := []struct {
		attempt int
		ceiling time.Duration
	}{
		{0, 100 * time.Millisecond}, {1, 200 * time.Millisecond}, {2, 400 * time.Millisecond},
		{5, 3200 * time.Millisecond}, {6, 5 * time.Second}, {40, 5 * time.Second},
	}
	for _, tt := range tests {
		var lo, hi time.Duration = tt.ceiling, 0
		for range 500 {
			d := b.Delay(tt.attempt)
			if d < b.Min/10 || d > tt.ceiling {
				t.Fatalf("Delay(%d) = %s, want between %s and %s", tt.attempt, d, b.Min/10, tt.ceiling)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Full jitter: clients cut off together spread over the whole interval.
		if hi-lo < tt.ceiling/2 {
			t.Errorf("Delay(%d) ranged only over [%s, %s] in 500 draws", tt.attempt, lo, hi)
		}
	}
}

func TestWaitRetriesOnlyTemporaryFailuresAndLogsTheWaitOnce(t *testing.T) {
	logs := &testenv.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	attempts := 0
	err := dial.Wait(context.Background(), log, "thing", time.Minute, time.Millisecond, func(context.Context) error {
		attempts++
		if attempts < 4 {
			return dial.Temporary(errors.New("connection refused"))
		}
		return nil
	})
	if err != nil || attempts != 4 {
		t.Fatalf("Wait = %v after %d attempts, want nil after 4", err, attempts)
	}
	if out := logs.String(); strings.Count(out, "thing not reachable yet; retrying") != 1 || strings.Count(out, "thing reachable") != 1 {
		t.Errorf("want one line when the wait begins and one when it ends, got:\n%s", out)
	}

	refused := errors.New("401")
	attempts = 0
	err = dial.Wait(context.Background(), log, "thing", time.Minute, time.Millisecond, func(context.Context) error { attempts++; return refused })
	if !errors.Is(err, refused) || attempts != 1 {
		t.Errorf("a permanent failure: Wait = %v after %d attempts, want it at once", err, attempts)
	}
}

func TestWaitGivesUpAfterItsPatienceAndSaysHowLongItWaited(t *testing.T) {
	down := dial.Temporary(errors.New("connection refused"))
	err := dial.Wait(context.Background(), slog.New(slog.DiscardHandler), "thing", 50*time.Millisecond, 10*time.Millisecond,
		func(context.Context) error { return down })
	var gaveUp *dial.GaveUpError
	if !errors.As(err, &gaveUp) || gaveUp.After < 50*time.Millisecond || !errors.Is(err, down) {
		t.Fatalf("Wait = %#v, want a GaveUpError after at least 50ms wrapping the last failure", err)
	}

	// No patience at all: the first failure is the answer.
	err = dial.Wait(context.Background(), slog.New(slog.DiscardHandler), "thing", 0, time.Millisecond, func(context.Context) error { return down })
	if !errors.Is(err, down) || errors.As(err, &gaveUp) {
		t.Errorf("Wait with no patience = %v, want the failure itself", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = dial.Wait(ctx, slog.New(slog.DiscardHandler), "thing", time.Minute, time.Hour, func(context.Context) error { return down })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestUntrustedNamesTheCertificateProblem(t *testing.T) {
	issuer := &x509.Certificate{}
	issuer.Issuer.CommonName = "some CA"
	tests := []struct {
		err  error
		want dial.Problem
		says string
	}{
		{fmt.Errorf("tls: %w", x509.UnknownAuthorityError{Cert: issuer}), dial.UnknownAuthority, `signed by an unknown authority ("CN=some CA")`},
		{x509.HostnameError{Certificate: issuer, Host: "db.example"}, dial.WrongHost, "does not name that host"},
		{x509.CertificateInvalidError{Cert: issuer, Reason: x509.Expired}, dial.InvalidCertificate, "is invalid"},
		{errors.New("x509: certificate fingerprint mismatch"), dial.FingerprintMismatch, "fingerprint"},
	}
	for _, tt := range tests {
		u := dial.Untrusted("elasticsearch", "https://es:9200", tt.err)
		if u == nil || u.Problem != tt.want || !strings.Contains(u.Error(), tt.says) || !strings.HasPrefix(u.Error(), "elasticsearch at https://es:9200 ") {
			t.Errorf("dial.Untrusted(%v) = %v, want problem %d saying %q", tt.err, u, tt.want, tt.says)
		}
	}
	if u := dial.Untrusted("nats", "nats://n:4222", errors.New("connection refused")); u != nil {
		t.Errorf("dial.Untrusted(connection refused) = %v, want nil", u)
	}
}
