//go:build integration

package deploy

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/testenv"
)

// Ctrl-C after `make run 2>&1 | tee run.log` interrupts tee too: the scripts'
// cleanup then writes to a pipe nobody reads. It must still stop what it started
// instead of dying of SIGPIPE and leaving the servers running.
func TestInterruptedServicesStopWhatTheyStartedWhenTheirOutputIsGone(t *testing.T) {
	state := t.TempDir()
	env := []string{"SERVICES_STATE=" + state, "NATS_PORT=" + strconv.Itoa(testenv.PortOf(t, testenv.FreeAddr(t))), "NATS_MONITOR_PORT=" + strconv.Itoa(testenv.PortOf(t, testenv.FreeAddr(t)))}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "SERVICES_STATE=") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command("bash", "local/services.sh", "with", "nats", "--", "sleep", "300")
	cmd.Env = env
	// A process group of its own, as a terminal gives a pipeline: Ctrl-C reaches
	// every process in it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "NATS ready") {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("services.sh ended before NATS was ready")
		}
	case <-time.After(3 * time.Minute):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatal("NATS not ready within 3 minutes")
	}
	raw, err := os.ReadFile(filepath.Join(state, "nats.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })

	out.Close() // tee is gone
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == -1 {
			t.Errorf("services.sh was killed by a signal (%v) instead of exiting after its cleanup", exit)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("services.sh did not exit within 45s of Ctrl-C")
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
	}
	t.Errorf("nats-server (pid %d) still runs after Ctrl-C with the output pipe closed", pid)
}

// With SERVICES_STATE set elsewhere, the log a person is told to read is the one
// written there.
func TestServicesNameTheLogInTheStateDirectoryInUse(t *testing.T) {
	state := t.TempDir()
	env := []string{"SERVICES_STATE=" + state, "NATS_PORT=" + strconv.Itoa(testenv.PortOf(t, testenv.FreeAddr(t))), "NATS_MONITOR_PORT=" + strconv.Itoa(testenv.PortOf(t, testenv.FreeAddr(t)))}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "SERVICES_STATE=") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command("bash", "local/services.sh", "with", "nats", "--", "true")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("services.sh with nats -- true: %v\n%s", err, out)
	}
	want := "(log " + filepath.Join(state, "nats.log") + ")"
	if !strings.Contains(string(out), want) {
		t.Errorf("services.sh does not name the log it writes, %s:\n%s", want, out)
	}
}

// The secured node is handed to the command with everything a client needs, its
// password kept out of its log and its files readable by their owner only.
func TestSecuredElasticsearchIsHandedToTheCommandWithItsCAAndPassword(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	port := strconv.Itoa(testenv.PortOf(t, testenv.FreeAddr(t)))
	env := []string{
		"SERVICES_STATE=" + state,
		"ES_SECURED_PORT=" + port,
		"ES_SECURED_TRANSPORT_PORT=" + strconv.Itoa(testenv.PortOf(t, testenv.FreeAddr(t))),
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ELASTICSEARCH_SECURED_") && !strings.HasPrefix(kv, "ES_SECURED_") && !strings.HasPrefix(kv, "SERVICES_STATE=") {
			env = append(env, kv)
		}
	}
	// The command asks the node who it is, with the password it was handed (on curl's
	// standard input) and with a wrong one.
	script := `env | grep '^ELASTICSEARCH_SECURED_' | sort
printf 'user = "elastic:%s"\n' "$ELASTICSEARCH_SECURED_PASSWORD" |
  curl -s -K - --cacert "$ELASTICSEARCH_SECURED_CA_CERT" -o /dev/null -w 'elastic %{http_code}\n' "$ELASTICSEARCH_SECURED_URL/_security/_authenticate"
curl -s -u elastic:wrong --cacert "$ELASTICSEARCH_SECURED_CA_CERT" -o /dev/null -w 'wrong password %{http_code}\n' "$ELASTICSEARCH_SECURED_URL/_security/_authenticate"`
	cmd := exec.Command("bash", "local/services.sh", "with", "elasticsearch-secured", "--", "sh", "-c", script)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			stderr = exit.Stderr
		}
		t.Fatalf("services.sh with elasticsearch-secured: %v\n%s%s", err, out, stderr)
	}

	password, err := os.ReadFile(filepath.Join(state, "elasticsearch-secured", "elastic-password"))
	if err != nil {
		t.Fatal(err)
	}
	want := "ELASTICSEARCH_SECURED_CA_CERT=" + filepath.Join(state, "elasticsearch-secured", "config", "certs", "ca.crt") + "\n" +
		"ELASTICSEARCH_SECURED_PASSWORD=" + strings.TrimSpace(string(password)) + "\n" +
		"ELASTICSEARCH_SECURED_URL=https://127.0.0.1:" + port + "\n" +
		"elastic 200\n" +
		"wrong password 401\n"
	if string(out) != want {
		t.Errorf("the command saw\n%s\nwant\n%s", out, want)
	}
	for _, f := range []string{"env", "elasticsearch-secured/elastic-password", "elasticsearch-secured/config/certs/ca.key", "elasticsearch-secured/config/certs/http.key"} {
		info, err := os.Stat(filepath.Join(state, f))
		if err != nil {
			t.Error(err)
		} else if info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, info.Mode().Perm())
		}
	}
	log, err := os.ReadFile(filepath.Join(state, "elasticsearch-secured.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), strings.TrimSpace(string(password))) {
		t.Error("the node's log holds the elastic password")
	}
}

// A mistyped service is refused with the list of those that exist.
func TestServicesListTheServicesWhenOneIsUnknown(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("bash", "local/services.sh", "up", "elasticsearch-secure")
	cmd.Env = append(os.Environ(), "SERVICES_STATE="+t.TempDir())
	out, err := cmd.CombinedOutput()
	want := "services: unknown service elasticsearch-secure (elasticsearch, elasticsearch-secured, nats, elasticsearch-cluster, nats-cluster)\n"
	if err == nil || string(out) != want {
		t.Errorf("services.sh up elasticsearch-secure: %v, said %q; want an error saying %q", err, out, want)
	}
}
