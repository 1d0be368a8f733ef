// Command publisher publishes sample annotated camera frames to the pipeline's NATS
// JetStream stream, for demos and load tests.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/sample"
)

// version and commit are stamped in at build time with -ldflags "-X main.version=...".
var version, commit = "dev", "unknown"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "publisher:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stdout)
	natsURL := fs.String("nats-url", envOr(getenv, "NATS_URL", "nats://127.0.0.1:4222"), "NATS server (env NATS_URL)")
	prefix := fs.String("subject-prefix", "annotations", "frames go to <prefix>.<camera id>")
	count := fs.Int("count", 100, "number of frames to publish")
	cameras := fs.Int("cameras", 4, "number of cameras the frames come from")
	startFlag := fs.String("start", "2023-03-09T19:40:00Z", "timestamp of the first frames (RFC 3339)")
	interval := fs.Duration("interval", 10*time.Second, "time between two frames of one camera")
	window := fs.Int("window", 4096, "most publishes awaiting acknowledgement at once")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "publisher %s: publishes sample annotated camera frames to NATS JetStream.\n\nUsage: publisher [flags]\n\n", version)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Fprintln(stdout, "publisher", version, commit)
		return nil
	}
	start, err := time.Parse(time.RFC3339Nano, *startFlag)
	if err != nil {
		return fmt.Errorf("--start: %w", err)
	}
	if *count < 0 || *cameras < 1 || *interval <= 0 || *window < 1 {
		return errors.New("--count must be ≥ 0, --cameras and --window ≥ 1, --interval > 0")
	}

	nc, err := nats.Connect(*natsURL, nats.Name("publisher"))
	if err != nil {
		return fmt.Errorf("connect to nats %s: %w", *natsURL, err)
	}
	defer nc.Close()
	var failed atomic.Int64
	var firstErr atomic.Value
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(*window),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err)
		}))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	gen := sample.Generator{Start: start, Interval: *interval, Cameras: *cameras}
	began := time.Now()
	for i := 0; i < *count; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f := gen.Next()
		data, err := json.Marshal(f)
		if err != nil {
			return fmt.Errorf("encode frame: %w", err)
		}
		if _, err := js.PublishAsync(f.Subject(*prefix), data, jetstream.WithMsgID(f.MsgID())); err != nil {
			return fmt.Errorf("publish frame %d: %w", i+1, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return errors.New("timed out waiting for the stream to acknowledge the frames")
	}
	if n := failed.Load(); n > 0 {
		err := firstErr.Load().(error)
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("%d frames were not stored: no stream listens on %s.> (the webserver creates it at start): %w", n, *prefix, err)
		}
		return fmt.Errorf("%d frames were not stored: %w", n, err)
	}
	fmt.Fprintf(stdout, "published %d frames from %d cameras (%s to %s) in %s\n", *count, *cameras,
		start.UTC().Format(time.RFC3339), start.Add(time.Duration((*count-1) / *cameras)**interval).UTC().Format(time.RFC3339),
		time.Since(began).Round(time.Millisecond))
	return nil
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}
