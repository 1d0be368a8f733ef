// Command publisher publishes annotated messages to the pipeline's NATS JetStream
// stream: generated camera frames for demos and load tests, or an NDJSON file to
// replay recorded data.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/natsconn"
	"github.com/annotated-data/pipeline/internal/progress"
	"github.com/annotated-data/pipeline/internal/publish"
	"github.com/annotated-data/pipeline/internal/sample"
)

// version and commit are stamped in at build time with -ldflags "-X main.version=...".
var version, commit = "dev", "unknown"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "publisher:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stdout)
	natsURL := fs.String("nats-url", "", "NATS server(s), comma-separated; overrides NATS_URL")
	prefix := fs.String("subject-prefix", "annotations", "generated frames go to <prefix>.<camera id>")
	count := fs.Int("count", 100, "number of frames to generate")
	cameras := fs.Int("cameras", 4, "number of cameras the frames come from")
	startFlag := fs.String("start", "2023-03-09T19:40:00Z", "timestamp of the first frames (RFC 3339)")
	interval := fs.Duration("interval", 10*time.Second, "time between two frames of one camera")
	file := fs.String("file", "", "replay this NDJSON file (one JSON message per line) instead of generating frames")
	subject := fs.String("subject", "annotations.replay", "with --file: the subject to publish on")
	idField := fs.String("id-field", "", "with --file: take Nats-Msg-Id from this top-level field (default: a hash of the line)")
	rateFlag := fs.Float64("rate", 0, "messages per second (0: as fast as the stream acknowledges)")
	window := fs.Int("window", 4096, "most messages awaiting the stream's acknowledgement at once")
	quiet := fs.Bool("quiet", false, "no progress output")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `publisher %s: publishes annotated messages to NATS JetStream.

Usage:
  publisher [--count N] [--cameras N] [--start TIME] [--interval D] [--rate R]
  publisher --file data.ndjson [--subject S] [--id-field F] [--rate R]

Generated frames carry a camera id, frame number, timestamp and labelled boxes
with confidences; each is published with a Nats-Msg-Id, so publishing the same
frames twice stores them once.

`, version)
		fs.PrintDefaults()
		fmt.Fprintf(fs.Output(), "\nIt connects to NATS as the webserver does, configured by environment variables:\n\n")
		config.WriteUsage(fs.Output(), config.NATSVars(&config.NATS{}))
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
	if *count < 0 || *cameras < 1 || *interval <= 0 || *window < 1 || *rateFlag < 0 {
		return errors.New("--count and --rate must be ≥ 0, --cameras and --window ≥ 1, --interval > 0")
	}

	var src publish.Source
	var total int64
	what := "frames"
	if *file != "" {
		f, lines, err := openNDJSON(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		src, total, what = publish.NDJSON(f, *subject, *idField), lines, "messages"
	} else {
		start, err := time.Parse(time.RFC3339Nano, *startFlag)
		if err != nil {
			return fmt.Errorf("--start: %w", err)
		}
		src, total = publish.Frames(&sample.Generator{Start: start, Interval: *interval, Cameras: *cameras}, *prefix, *count), int64(*count)
	}

	env := getenv
	if *natsURL != "" {
		env = func(name string) string {
			if name == "NATS_URL" {
				return *natsURL
			}
			return getenv(name)
		}
	}
	natsCfg, err := config.LoadNATS(env)
	if err != nil {
		return fmt.Errorf("configuration (see --help):\n%w", err)
	}
	nc, err := natsconn.Connect(ctx, natsCfg, "publisher", slog.New(slog.NewTextHandler(stderr, nil)))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(*window))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	progressOut := stderr
	if *quiet {
		progressOut = io.Discard
	}
	bar := progress.New(progressOut, what, total)
	began := time.Now()
	stored, dups, err := publish.Run(ctx, js, src, publish.Options{Rate: *rateFlag, Window: *window}, func() { bar.Add(1) })
	bar.Finish()
	if err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("no stream stores these subjects; start the webserver first (it creates the stream): %w", err)
		}
		return err
	}
	fmt.Fprintf(stdout, "published %d %s in %s: %d stored, %d already in the stream\n",
		stored+dups, what, time.Since(began).Round(time.Millisecond), stored, dups)
	return nil
}

// openNDJSON opens path and counts its lines, for the progress bar's total.
func openNDJSON(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("--file: %w", err)
	}
	var lines int64
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		for _, b := range buf[:n] {
			if b == '\n' {
				lines++
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("--file %s: %w", path, err)
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("--file %s: %w", path, err)
	}
	return f, lines, nil
}
