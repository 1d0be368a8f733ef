// Package config reads each binary's settings from environment variables, once, at
// start. Every variable is declared in one table per binary, which drives loading,
// validation, the --help text, and the checks that keep docs/operating.md and the env
// files in step with the code.
package config

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/annotated-data/pipeline/internal/dial"
)

// Var declares one environment variable: its name, default, meaning, and where its
// parsed value goes.
type Var struct {
	Name    string
	Default string
	Usage   string
	// Secret values are never echoed, not even in validation errors.
	Secret bool

	target any // *string, *int, *int64, *bool, *time.Duration, *[]string
	// derive gives the default of a variable that follows from others declared
	// before it (read by then); Default then says how, or gives the value with
	// every default, and Usage the rest, for --help and docs/operating.md.
	derive func() string
}

func (v Var) set(raw string) error {
	switch p := v.target.(type) {
	case *string:
		*p = raw
	case *int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Errorf("not an integer")
		}
		*p = n
	case *int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("not an integer")
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("not true or false")
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("not a duration like 500ms, 30s or 5m")
		}
		*p = d
	case *[]string:
		*p = splitList(raw)
	default:
		panic(fmt.Sprintf("config: variable %s has unsupported target %T", v.Name, v.target))
	}
	return nil
}

func splitList(raw string) []string {
	var out []string
	for _, s := range strings.Split(raw, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// load fills every variable's target from getenv (or its default). The returned
// checks hold the variables that did not parse; validation adds to them, so an
// operator sees every problem at once, and each only once.
func load(getenv func(string) string, vars []Var) *checks {
	c := &checks{failed: map[string]bool{}, set: map[string]bool{}}
	for _, v := range vars {
		raw := getenv(v.Name)
		c.set[v.Name] = raw != ""
		switch {
		case raw != "":
		case v.derive != nil:
			raw = v.derive()
		default:
			raw = v.Default
		}
		if err := v.set(raw); err != nil {
			c.errs = append(c.errs, v.problem(raw, err.Error()))
			c.failed[v.Name] = true
		}
	}
	return c
}

func (v Var) problem(raw, msg string) error {
	if v.Secret {
		return fmt.Errorf("%s: %s", v.Name, msg)
	}
	return fmt.Errorf("%s=%q: %s", v.Name, raw, msg)
}

// Names lists the variable names, in declaration order.
func Names(vars []Var) []string {
	names := make([]string, len(vars))
	for i, v := range vars {
		names[i] = v.Name
	}
	return names
}

// WriteUsage prints the variables as a table, for --help.
func WriteUsage(w io.Writer, vars []Var) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	for _, v := range vars {
		def := v.Default
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Name, def, v.Usage)
	}
	tw.Flush()
}

// checks collects the problems of one configuration.
type checks struct {
	errs   []error
	failed map[string]bool // variables that did not parse; their checks would only repeat that
	set    map[string]bool // variables given in the environment, as opposed to left at their default
}

func (c *checks) add(cond bool, name, format string, args ...any) {
	if !cond && !c.failed[name] {
		c.errs = append(c.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
}

func (c *checks) err() error { return errors.Join(c.errs...) }

func (c *checks) positive(name string, n int) {
	c.add(n > 0, name, "must be greater than 0, got %d", n)
}

func (c *checks) positiveDuration(name string, d time.Duration) {
	c.add(d > 0, name, "must be greater than 0, got %s", d)
}

// urls checks a list of server addresses: at least one, each a URL with one of
// schemes and without credentials. Credentials in an address end up in process
// lists and error messages; they have variables of their own, which instead names.
func (c *checks) urls(name string, list []string, instead string, schemes ...string) {
	c.add(len(list) > 0, name, "must name at least one server")
	for _, raw := range list {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			c.add(false, name, "%q is not a URL like %s://host:port", raw, schemes[0])
			continue
		}
		if u.User != nil {
			c.add(false, name, "%s holds credentials: set %s instead", u.Redacted(), instead)
			continue
		}
		ok := false
		for _, s := range schemes {
			ok = ok || u.Scheme == s
		}
		c.add(ok, name, "%q: scheme must be one of %s", raw, strings.Join(schemes, ", "))
	}
}

func (c *checks) oneOf(name, value string, allowed ...string) {
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	c.add(false, name, "%q is not one of %s", value, strings.Join(allowed, ", "))
}

func (c *checks) zone(name, value string) *time.Location {
	loc, err := time.LoadLocation(value)
	c.add(err == nil, name, "%q is not an IANA time zone such as UTC or Europe/Berlin", value)
	if loc == nil {
		return time.UTC
	}
	return loc
}

// WriteMarkdown prints the variables as a Markdown table, for docs/operating.md.
func WriteMarkdown(w io.Writer, vars []Var) {
	fmt.Fprintln(w, "| Variable | Default | Meaning |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	for _, v := range vars {
		def := "`" + v.Default + "`"
		if v.Default == "" {
			def = "(none)"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s |\n", v.Name, def, strings.ReplaceAll(v.Usage, "|", `\|`))
	}
}

// gaveUpWaiting explains a wait for an unreachable service that ran out, naming
// the variable that sets its length; nil if err is no such thing.
func gaveUpWaiting(err error, variable string) error {
	var g *dial.GaveUpError
	if !errors.As(err, &g) {
		return nil
	}
	return fmt.Errorf("%w (gave up after %s, %s)", g.Err, g.After.Round(time.Second), variable)
}
