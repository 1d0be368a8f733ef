package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/annotated-data/pipeline/internal/audit"
	"github.com/annotated-data/pipeline/internal/config"
	"github.com/annotated-data/pipeline/internal/ingest"
	"github.com/annotated-data/pipeline/internal/store"
)

// exitError carries the exit status a subcommand asks for.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode is the process's exit status for what run returned.
func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}

// Exit statuses of audit.
const (
	auditClean    = 0
	auditProblems = 1
	auditFailed   = 2
)

// toolName is what the tools call themselves on NATS, apart from the webserver.
const toolName = "webserver-tool"

// toolFlags is the command line of a subcommand: --help prints its usage and the
// variables it reads, as the webserver's does.
func toolFlags(name, usage string, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("webserver "+name, flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "%s\n\nOptions:\n", usage)
		fs.PrintDefaults()
		fmt.Fprintf(stdout, "\nConfigured by the webserver's environment variables:\n\n")
		config.WriteUsage(stdout, config.IngesterVars(&config.Ingester{}))
	}
	return fs
}

// parse parses args; done says there is nothing to run (--help, or an error).
func parse(fs *flag.FlagSet, args []string) (done bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return true, err
	}
	if fs.NArg() > 0 {
		return true, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	return false, nil
}

const auditUsage = `Usage: webserver audit [--since 24h | --from-seq N --to-seq M] [--json] [--repair]

Compares, for every sequence of the window that the stream still holds, the
messages in the stream, the documents in Elasticsearch (by @nats.seq) and the dead
letters (by original sequence), and reports missing sequences, sequences indexed
more than once, and sequences both indexed and dead-lettered. Without options it
audits the whole stream. Messages the webserver has not settled yet (after its
durable consumer's ack floor) are counted apart, not as missing.

Exit status: 0 clean; 1 something is missing or doubled, or part of the window is
beyond the stream; 2 the audit could not run. With --repair, the missing sequences
are replayed, and the status is 0 if that repaired every problem found.`

func runAudit(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := toolFlags("audit", auditUsage, stdout)
	since := fs.Duration("since", 0, "audit the messages published in this last span, e.g. 24h")
	from := fs.Uint64("from-seq", 0, "first stream sequence to audit (default: the first)")
	to := fs.Uint64("to-seq", 0, "last stream sequence to audit (default: the last)")
	asJSON := fs.Bool("json", false, "write the report as one JSON object")
	repair := fs.Bool("repair", false, "replay the missing sequences")
	if done, err := parse(fs, args); done {
		if err != nil {
			return &exitError{auditFailed, err}
		}
		return nil
	}
	if *since != 0 && (*from != 0 || *to != 0) {
		return &exitError{auditFailed, errors.New("give --since or --from-seq/--to-seq, not both")}
	}
	if *to != 0 && *from > *to {
		return &exitError{auditFailed, fmt.Errorf("--from-seq %d is after --to-seq %d", *from, *to)}
	}
	logOut := stdout
	if *asJSON {
		logOut = io.Discard // the report is the output
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
	access := store.Operator(*repair)
	cfg, err := loadConfig(getenv)
	if err != nil {
		return &exitError{auditFailed, err}
	}
	svc, err := connect(ctx, cfg, toolName, log, access)
	if err != nil {
		return &exitError{auditFailed, err}
	}
	defer svc.close()

	w := audit.Window{From: *from, To: *to}
	if *since > 0 {
		w.Since = time.Now().Add(-*since)
	}
	report, err := newAuditor(svc).Audit(ctx, w)
	if err != nil {
		return &exitError{auditFailed, fmt.Errorf("audit: %w", err)}
	}
	if *asJSON {
		if err := report.WriteJSON(stdout); err != nil {
			return &exitError{auditFailed, err}
		}
	} else {
		report.WriteText(stdout)
	}
	if report.Clean() {
		return nil
	}
	if !*repair || report.Missing == 0 {
		return &exitError{auditProblems, errors.New("audit: not clean")}
	}

	progressOut := stdout
	if *asJSON {
		progressOut = io.Discard
	}
	clean, err := report.Repair(ctx, func(ctx context.Context, missing []audit.Range) (int64, int64, error) {
		windows := make([]ingest.Window, len(missing))
		for i, r := range missing {
			windows[i] = ingest.Window{FromSeq: r.From, ToSeq: r.To}
		}
		res, err := ingest.Replay(ctx, svc.js, svc.store, svc.cfg.Ingest, log, windows, progressOut)
		if !*asJSON {
			writeReplay(stdout, svc.cfg.Stream, res)
		}
		return res.Settled(), res.Unsettled, err
	})
	if err != nil {
		return &exitError{auditFailed, err}
	}
	if !clean {
		return &exitError{auditProblems, errors.New("audit: not clean after the repair")}
	}
	return nil
}

const replayUsage = `Usage: webserver replay --from-seq N [--to-seq M] | --since T [--until T] [--subject S ...]

Re-ingests a window of the stream through an ephemeral ordered consumer, with the
same document building, ids, indices and dead-letter rules as live ingestion; the
webserver's durable consumer is not touched. Documents that exist are counted as
duplicates and left as they are, and a message that already has a dead letter gets
no second one, so running it twice changes nothing. T is a time (RFC 3339, e.g.
2026-11-28T00:00:00Z) or a span before now (e.g. 24h).

Exit status: 0 when the whole window was replayed; 1 when part of it is beyond the
stream, when some messages could be neither indexed nor dead-lettered, or on error.`

func runReplay(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := toolFlags("replay", replayUsage, stdout)
	from := fs.Uint64("from-seq", 0, "first stream sequence to replay")
	to := fs.Uint64("to-seq", 0, "last stream sequence to replay (default: the last when the replay starts)")
	since := fs.String("since", "", "replay the messages published since then")
	until := fs.String("until", "", "and before then (default: up to the last when the replay starts)")
	var subjects []string
	fs.Func("subject", "only messages on this subject (wildcards allowed); repeat for more", func(s string) error {
		subjects = append(subjects, s)
		return nil
	})
	if done, err := parse(fs, args); done {
		return err
	}
	now := time.Now()
	w := ingest.Window{FromSeq: *from, ToSeq: *to, Subjects: subjects}
	var err error
	switch {
	case *since != "" && (*from != 0 || *to != 0):
		return errors.New("give --since/--until or --from-seq/--to-seq, not both")
	case *since != "":
		if w.Since, err = when(*since, now); err != nil {
			return fmt.Errorf("--since: %w", err)
		}
		if *until != "" {
			if w.Until, err = when(*until, now); err != nil {
				return fmt.Errorf("--until: %w", err)
			}
		}
	case *from == 0:
		return errors.New("say what to replay: --from-seq, or --since (see --help)")
	case *to != 0 && *to < *from:
		return fmt.Errorf("--from-seq %d is after --to-seq %d", *from, *to)
	}
	log := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	svc, err := connect(ctx, cfg, toolName, log, store.Operator(true))
	if err != nil {
		return err
	}
	defer svc.close()
	res, err := ingest.Replay(ctx, svc.js, svc.store, svc.cfg.Ingest, log, []ingest.Window{w}, stdout)
	writeReplay(stdout, svc.cfg.Stream, res)
	switch {
	case err != nil:
		return fmt.Errorf("replay: %w", err)
	case res.Trimmed:
		return &exitError{1, fmt.Errorf("replay: part of the window is beyond the stream, which now begins at sequence %d", res.FirstHeld)}
	case res.Unsettled > 0:
		return &exitError{1, fmt.Errorf("replay: %d messages could be neither indexed nor dead-lettered; run it again", res.Unsettled)}
	}
	return nil
}

func writeReplay(w io.Writer, stream string, r ingest.ReplayResult) {
	fmt.Fprintf(w, "replayed %d messages of stream %s: %d indexed (were missing), %d duplicates (already indexed), %d dead-lettered, %d already dead-lettered, %d unsettled\n",
		r.Messages, stream, r.Indexed, r.Duplicates, r.DeadLettered, r.AlreadyDeadLettered, r.Unsettled)
	if r.Trimmed {
		fmt.Fprintf(w, "part of the window is beyond the stream, which now begins at sequence %d: it was not replayed\n", r.FirstHeld)
	}
}

// when reads a point in time: RFC 3339, or a span before now.
func when(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a time like 2026-11-28T00:00:00Z nor a span like 24h", s)
	}
	return t, nil
}
