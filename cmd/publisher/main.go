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
	opts, proceed, err := parseFlags(args, stdout)
	if !proceed {
		return err
	}
	src, err := opts.source()
	if err != nil {
		return err
	}
	defer src.close()

	if opts.natsURL != "" {
		getenv = overriding(getenv, "NATS_URL", opts.natsURL)
	}
	natsCfg, err := config.LoadNATS(getenv)
	if err != nil {
		return fmt.Errorf("configuration (see --help):\n%w", err)
	}
	connCfg := natsCfg.Config
	connCfg.Name = "publisher"
	nc, err := natsconn.Connect(ctx, connCfg, slog.New(slog.NewTextHandler(stderr, nil)))
	if err != nil {
		return natsCfg.Explain(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(opts.window))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	progressOut := stderr
	if opts.quiet {
		progressOut = io.Discard
	}
	return publishAll(ctx, js, src, opts, progress.New(progressOut, src.what, src.total), stdout)
}

// options are the publisher's flags.
type options struct {
	natsURL                string
	prefix                 string
	count, cameras         int
	start                  string
	interval               time.Duration
	file, subject, idField string
	rate                   float64
	window                 int
	quiet                  bool
}

// parseFlags reads the flags; proceed is false when there is nothing more to do
// (--help, --version, or an error).
func parseFlags(args []string, stdout io.Writer) (o options, proceed bool, err error) {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.StringVar(&o.natsURL, "nats-url", "", "NATS server(s), comma-separated; overrides NATS_URL")
	fs.StringVar(&o.prefix, "subject-prefix", "annotations", "generated frames go to <prefix>.<camera id>")
	fs.IntVar(&o.count, "count", 100, "number of frames to generate")
	fs.IntVar(&o.cameras, "cameras", 4, "number of cameras the frames come from")
	fs.StringVar(&o.start, "start", "2023-03-09T19:40:00Z", "timestamp of the first frames (RFC 3339)")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "time between two frames of one camera")
	fs.StringVar(&o.file, "file", "", "replay this NDJSON file (one JSON message per line) instead of generating frames")
	fs.StringVar(&o.subject, "subject", "annotations.replay", "with --file: the subject to publish on")
	fs.StringVar(&o.idField, "id-field", "", "with --file: take Nats-Msg-Id from this top-level field (default: a hash of the line)")
	fs.Float64Var(&o.rate, "rate", 0, "messages per second (0: as fast as the stream acknowledges)")
	fs.IntVar(&o.window, "window", 4096, "most messages awaiting the stream's acknowledgement at once")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress output")
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
			return o, false, nil
		}
		return o, false, err
	}
	if *showVersion {
		fmt.Fprintln(stdout, "publisher", version, commit)
		return o, false, nil
	}
	if o.count < 0 || o.cameras < 1 || o.interval <= 0 || o.window < 1 || o.rate < 0 {
		return o, false, errors.New("--count and --rate must be ≥ 0, --cameras and --window ≥ 1, --interval > 0")
	}
	return o, true, nil
}

// source is what will be published, with its size for the progress bar.
type source struct {
	publish.Source
	what  string // "frames" or "messages"
	total int64
	close func()
}

// source opens the NDJSON file, or sets up the frame generator.
func (o options) source() (source, error) {
	if o.file != "" {
		f, lines, err := openNDJSON(o.file)
		if err != nil {
			return source{}, err
		}
		return source{publish.NDJSON(f, o.subject, o.idField), "messages", lines, func() { f.Close() }}, nil
	}
	start, err := time.Parse(time.RFC3339Nano, o.start)
	if err != nil {
		return source{}, fmt.Errorf("--start: %w", err)
	}
	gen := &sample.Generator{Start: start, Interval: o.interval, Cameras: o.cameras}
	return source{publish.Frames(gen, o.prefix, o.count), "frames", int64(o.count), func() {}}, nil
}

// publishAll publishes src, showing progress on bar, and reports the outcome.
func publishAll(ctx context.Context, js jetstream.JetStream, src source, o options, bar *progress.Reporter, stdout io.Writer) error {
	began := time.Now()
	stored, dups, err := publish.Run(ctx, js, src.Source, publish.Options{Rate: o.rate, Window: o.window}, func() { bar.Add(1) })
	bar.Finish()
	if err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("no stream stores these subjects; start the webserver first (it creates the stream): %w", err)
		}
		return err
	}
	fmt.Fprintf(stdout, "published %d %s in %s: %d stored, %d already in the stream\n",
		stored+dups, src.what, time.Since(began).Round(time.Millisecond), stored, dups)
	return nil
}

// overriding returns getenv with name set to value.
func overriding(getenv func(string) string, name, value string) func(string) string {
	return func(n string) string {
		if n == name {
			return value
		}
		return getenv(n)
	}
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
