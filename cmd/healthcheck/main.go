// Command healthcheck asks a local health endpoint whether the service is up, for
// container healthchecks: the images are distroless, with no shell or curl.
//
//	healthcheck http://127.0.0.1:8081/healthz
//
// It exits 0 on a 2xx answer within the timeout, 1 otherwise. An http:// URL whose
// server turns out to speak TLS is asked again over https://.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if err := run(context.Background(), os.Args, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stdout)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	insecure := fs.Bool("insecure", false, "accept any certificate (the probe talks to its own container; the certificate names the public domain)")
	// The backend's autocert mode answers only handshakes that name one of its
	// domains, and a probe of 127.0.0.1 names none: by default, name the first.
	domain, _, _ := strings.Cut(os.Getenv("TLS_DOMAINS"), ",")
	serverName := fs.String("server-name", strings.TrimSpace(domain), "TLS server name to send (default: the first of $TLS_DOMAINS)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: healthcheck [--timeout D] [--insecure] [--server-name NAME] URL")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("one URL is required")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: *insecure, ServerName: *serverName}}}
	target := fs.Arg(0)
	status, body, err := get(ctx, client, target)
	if err == nil && status == http.StatusBadRequest && strings.Contains(body, "HTTPS server") && strings.HasPrefix(target, "http://") {
		// The service has TLS turned on (the backend's TLS_MODE): one probe URL
		// serves both configurations.
		target = "https://" + strings.TrimPrefix(target, "http://")
		status, _, err = get(ctx, client, target)
	}
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return fmt.Errorf("%s answered %d", target, status)
	}
	return nil
}

func get(ctx context.Context, client *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	return res.StatusCode, string(body), nil
}
