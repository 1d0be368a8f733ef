package testenv

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildBinaries compiles the named ./cmd packages into dir, the way `make build`
// does (with the race detector when the tests run with it), and returns their paths
// by name.
func BuildBinaries(dir string, names ...string) (map[string]string, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	args := []string{"build", "-trimpath", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	paths := map[string]string{}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
		paths[n] = filepath.Join(dir, n)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go %v: %w\n%s", args, err, out)
	}
	return paths, nil
}

// Process is a binary under test, running with its own environment. Its output is
// kept and shown if the test fails.
type Process struct {
	t    testing.TB
	cmd  *exec.Cmd
	out  *Buffer
	done chan struct{}
	err  error
}

// StartProcess runs bin with env (and nothing inherited but PATH and HOME). It is
// stopped with SIGTERM when the test ends.
func StartProcess(t testing.TB, bin string, env map[string]string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := &Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &Process{t: t, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(bin), out.String())
		}
	})
	return p
}

// Stop sends SIGTERM and waits up to 30s for a graceful exit, then kills.
func (p *Process) Stop() error { return p.signal(syscall.SIGTERM, 30*time.Second) }

// Kill ends the process at once, with no chance to finish its work: a crash.
func (p *Process) Kill() { p.signal(syscall.SIGKILL, 10*time.Second) }

func (p *Process) signal(sig syscall.Signal, patience time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(patience):
		p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// Output is everything the process wrote so far.
func (p *Process) Output() string { return p.out.String() }

// WaitHTTP polls url until it answers 200, failing the test after patience.
func WaitHTTP(t testing.TB, url string, patience time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not answer 200 within %s (last: %v)", url, patience, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// FreeAddr returns a loopback address with a port nothing listens on right now,
// for a process the test starts to listen on.
//
// The port comes from below the kernel's ephemeral range: a port from ":0" is
// an ephemeral one, which any outgoing connection of the many processes of a
// test run (to Elasticsearch, to NATS) may take before the process binds it
// ("address already in use"). Below the range only another FreeAddr could
// take it, and this process never hands out one port twice.
func FreeAddr(t testing.TB) string {
	t.Helper()
	freeMu.Lock()
	defer freeMu.Unlock()
	lo, hi := freePortRange()
	for range 1000 {
		port := lo + rand.IntN(hi-lo)
		if freeHanded[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // in use
		}
		ln.Close()
		freeHanded[port] = true
		return addr
	}
	t.Fatalf("no free port in %d-%d after 1000 tries", lo, hi)
	return ""
}

var (
	freeMu     sync.Mutex
	freeHanded = map[int]bool{}
)

// freePortRange is [15000, the first port of the kernel's ephemeral range).
func freePortRange() (lo, hi int) {
	first := 32768 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				first = n
			}
		}
	}
	return 15000, max(first, 20000) // a range set lower than that: share it
}

// Buffer collects output written from several goroutines (a process's stdout and
// stderr, a logger), for tests to read.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// PeakRSS is the most resident memory the process has used so far (VmHWM), in bytes.
func (p *Process) PeakRSS() (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", p.cmd.Process.Pid)
}

// CPUTime is the processor time (user and system) the process has used so far.
func (p *Process) CPUTime() (time.Duration, error) { return CPUTimeOf(p.cmd.Process.Pid) }

// CPUTimeOf is the processor time (user and system) process pid has used so far.
func CPUTimeOf(pid int) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}
