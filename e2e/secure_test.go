//go:build integration

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/annotated-data/pipeline/internal/sample"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// Shared by the tests of secured connections (secure_nats_test.go,
// secure_es_test.go): running the binaries, publishing with the publisher binary,
// and the checks every run ends with.

// secureFrames is what the tests publish: count frames from three cameras, one
// second apart, from 2023-03-09T19:40:00Z on.
type secureFrames struct{ count int }

var secureStart = time.Date(2023, 3, 9, 19, 40, 0, 0, time.UTC)

// args are the publisher's flags for these frames.
func (f secureFrames) args() []string {
	return []string{"--count", fmt.Sprint(f.count), "--cameras", "3", "--interval", "1s", "--start", secureStart.Format(time.RFC3339), "--quiet"}
}

// ids are the document ids the frames become: their Nats-Msg-Id.
func (f secureFrames) ids() map[string]int {
	gen := sample.Generator{Start: secureStart, Interval: time.Second, Cameras: 3}
	ids := map[string]int{}
	for range f.count {
		ids[gen.Next().MsgID()] = 1
	}
	return ids
}

// runToExit runs a binary that should end by itself, with env (and PATH and HOME),
// and returns its output, exit error and running time. It fails the test if the
// binary is still running after patience.
func runToExit(t *testing.T, bin string, env map[string]string, patience time.Duration, args ...string) (output string, took time.Duration, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	began := time.Now()
	out, err := cmd.CombinedOutput()
	took = time.Since(began)
	if ctx.Err() != nil {
		t.Fatalf("%s still running after %s:\n%s", filepath.Base(bin), patience, out)
	}
	return string(out), took, err
}

// publishFrames publishes frames with the publisher binary, connected by natsEnv,
// and fails the test unless it succeeds.
func publishFrames(t *testing.T, natsEnv map[string]string, frames secureFrames) string {
	t.Helper()
	out, _, err := runToExit(t, binary(t, "publisher"), natsEnv, 2*time.Minute, frames.args()...)
	if err != nil {
		t.Fatalf("publisher: %v\n%s", err, out)
	}
	return out
}

// startSecureWebserver runs the webserver with env and waits until it is ready.
func startSecureWebserver(t *testing.T, env map[string]string) *testenv.Process {
	t.Helper()
	admin := testenv.FreeAddr(t)
	full := map[string]string{
		"ADMIN_ADDR":        admin,
		"ES_INDEX_REPLICAS": "0",
		"BULK_MAX_WAIT":     "100ms",
		"NATS_ACK_WAIT":     "5s",
		// The frames are of March 2023, older than the default window.
		"TIMESTAMP_MAX_PAST": "off",
	}
	maps.Copy(full, env)
	proc := testenv.StartProcess(t, binary(t, "webserver"), full)
	waitReady(t, proc, "webserver", "http://"+admin+"/readyz")
	return proc
}

// waitReady waits until url answers 200, failing the test at once if the binary
// gave up (its main prints "<name>: <error>" as it exits) rather than after a minute.
func waitReady(t *testing.T, proc *testenv.Process, name, url string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if strings.Contains(proc.Output(), "\n"+name+": ") || strings.HasPrefix(proc.Output(), name+": ") {
			t.Fatalf("%s stopped before it was ready", name)
		}
	}
	t.Fatalf("%s did not answer 200 within a minute", url)
}

// waitForDocuments waits until the indices of prefix hold want's documents, then
// checks they are exactly those, each once.
func waitForDocuments(t *testing.T, esURL, prefix string, want map[string]int, patience time.Duration) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		testenv.Refresh(t, esURL, prefix+"-*")
		var count struct {
			Count int `json:"count"`
		}
		res, err := http.Get(esURL + "/" + prefix + "-*/_count")
		if err == nil {
			err = json.NewDecoder(res.Body).Decode(&count)
			res.Body.Close()
		}
		if err == nil && count.Count >= len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d documents stored after %s (last error: %v)", count.Count, len(want), patience, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if got := testenv.DocumentIDs(t, esURL, prefix+"-*"); !maps.Equal(got, want) {
		t.Errorf("stored documents differ from the published frames: %s", idDiff(got, want))
	}
}

// idDiff describes how two id → count maps differ, briefly.
func idDiff(got, want map[string]int) string {
	var missing, extra, doubled []string
	for id := range want {
		if got[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id, n := range got {
		if want[id] == 0 {
			extra = append(extra, id)
		}
		if n > 1 {
			doubled = append(doubled, id)
		}
	}
	return fmt.Sprintf("%d missing %v, %d unexpected %v, %d stored more than once %v",
		len(missing), first(missing), len(extra), first(extra), len(doubled), first(doubled))
}

// assertNoSecrets fails the test if any output shows any secret.
func assertNoSecrets(t *testing.T, outputs map[string]string, secrets ...string) {
	t.Helper()
	for name, out := range outputs {
		for _, s := range secrets {
			if s != "" && strings.Contains(out, s) {
				t.Errorf("the output of %s shows a secret (%d characters, starting %q)", name, len(s), s[:min(3, len(s))])
			}
		}
	}
}

// writeSecret writes a secret to a file, as a container platform mounts it, with
// the line break editors add.
func writeSecret(t *testing.T, secret string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// randomSecret is a secret no test output could contain by chance.
func randomSecret(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// Every kind of secret, in runs that work at debug level and in runs that fail
// because of them: none may show in any output.
func TestSecretsNeverAppearInLogs(t *testing.T) {
	t.Parallel()
	secured, prefix, accounts := securedAccounts(t)
	ca := testenv.NewCA(t, "nats test CA")
	token, wrongToken := randomSecret(t, "nats-token-"), randomSecret(t, "wrong-token-")
	natsPassword := randomSecret(t, "nats-pw-")
	wrongPassword := randomSecret(t, "wrong-pw-")
	ns := testenv.StartNATSWith(t, func(o *server.Options) {
		natsTLS(ca)(o)
		o.Authorization = token
	})
	natsEnv := map[string]string{"NATS_URL": ns.URL(), "NATS_CA_CERT": ca.CertFile, "NATS_TOKEN": token}
	esEnv := testenv.WithEnv(accounts.Env("webserver"), map[string]string{
		"ELASTICSEARCH_URL": secured.URL, "ELASTICSEARCH_CA_CERT": secured.CACertFile,
		"ES_INDEX_PREFIX": prefix, "LOG_LEVEL": "debug",
	})
	password, apiKey := accounts.Passwords["webserver"], accounts.APIKeys["backend"]
	outputs := map[string]string{}

	// A whole run, at debug level.
	ws := startSecureWebserver(t, testenv.WithEnv(natsEnv, esEnv))
	frames := secureFrames{count: 100}
	outputs["publisher"] = publishFrames(t, natsEnv, frames)
	waitForDocuments(t, secured.AdminURL, prefix, frames.ids(), time.Minute)
	listen := testenv.FreeAddr(t)
	backendEnv := testenv.WithEnv(esEnv, map[string]string{"ELASTICSEARCH_PASSWORD": "", "ELASTICSEARCH_API_KEY_FILE": writeSecret(t, apiKey), "ELASTICSEARCH_USERNAME": "", "LISTEN_ADDR": listen})
	backend := testenv.StartProcess(t, binary(t, "backend"), backendEnv)
	waitReady(t, backend, "backend", "http://"+listen+"/readyz")
	if code := status(t, "http://"+listen+"/getJsonStream?start_date=2023-03-09&end_date=2023-03-10"); code != http.StatusOK {
		t.Errorf("backend answered %d", code)
	}
	ws.Stop()
	backend.Stop()
	outputs["webserver"], outputs["backend"] = ws.Output(), backend.Output()

	// Runs refused because of a secret, or of how it was given.
	failing := []struct {
		name, bin string
		env       map[string]string
	}{
		{"webserver with a wrong NATS token", "webserver", testenv.WithEnv(esEnv, testenv.WithEnv(natsEnv, map[string]string{"NATS_TOKEN": wrongToken}))},
		{"publisher with a wrong NATS token", "publisher", testenv.WithEnv(natsEnv, map[string]string{"NATS_TOKEN": wrongToken})},
		{"webserver with a wrong Elasticsearch password", "webserver", testenv.WithEnv(natsEnv, testenv.WithEnv(esEnv, map[string]string{"ELASTICSEARCH_PASSWORD": wrongPassword}))},
		{"backend with an API key given twice", "backend", testenv.WithEnv(esEnv, map[string]string{"ELASTICSEARCH_USERNAME": "", "ELASTICSEARCH_PASSWORD": "", "ELASTICSEARCH_API_KEY": apiKey, "ELASTICSEARCH_API_KEY_FILE": writeSecret(t, apiKey)})},
		{"backend with a password in the address", "backend", testenv.WithEnv(esEnv, map[string]string{"ELASTICSEARCH_URL": strings.Replace(secured.URL, "https://", "https://pipeline:"+password+"@", 1)})},
		{"publisher with a NATS password but no user", "publisher", testenv.WithEnv(natsEnv, map[string]string{"NATS_TOKEN": "", "NATS_PASSWORD": natsPassword})},
		{"webserver with an API key that is not encoded", "webserver", testenv.WithEnv(natsEnv, testenv.WithEnv(esEnv, map[string]string{"ELASTICSEARCH_USERNAME": "", "ELASTICSEARCH_PASSWORD": "", "ELASTICSEARCH_API_KEY": "id:" + wrongPassword}))},
	}
	for _, f := range failing {
		var args []string
		if f.bin == "publisher" {
			args = []string{"--count", "1"}
		}
		out, _, err := runToExit(t, binary(t, f.bin), f.env, time.Minute, args...)
		if err == nil {
			t.Errorf("%s: started, want a refusal", f.name)
		}
		outputs[f.name] = out
	}
	for _, bin := range []string{"webserver", "backend", "publisher"} {
		out, _, _ := runToExit(t, binary(t, bin), testenv.WithEnv(natsEnv, esEnv), time.Minute, "--help")
		outputs[bin+" --help"] = out
	}

	assertNoSecrets(t, outputs, token, wrongToken, natsPassword, wrongPassword, password, apiKey)
	for name, out := range outputs {
		if strings.TrimSpace(out) == "" {
			t.Errorf("%s wrote nothing: the scan saw nothing to scan", name)
		}
	}
}
