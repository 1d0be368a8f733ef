package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Program describes a binary for its --help and --version.
type Program struct {
	Name, Summary   string
	Version, Commit string
}

// ParseFlags handles the command line the binaries share: --help prints the summary
// and the table of variables, --version the version and commit. It reports whether
// the program should go on and run.
func ParseFlags(args []string, stdout io.Writer, p Program, vars []Var) (run bool, err error) {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stdout)
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s %s: %s\n\n", p.Name, p.Version, p.Summary)
		fmt.Fprintf(fs.Output(), "Usage: %s [--version]\n\nConfigured by environment variables:\n\n", p.Name)
		WriteUsage(fs.Output(), vars)
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, nil
		}
		return false, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return false, fmt.Errorf("unexpected argument %q: %s is configured by environment variables", fs.Arg(0), p.Name)
	}
	if *showVersion {
		fmt.Fprintln(stdout, p.Name, p.Version, p.Commit)
		return false, nil
	}
	return true, nil
}
