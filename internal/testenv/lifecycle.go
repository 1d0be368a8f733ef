package testenv

import "syscall"

// Terminate sends SIGTERM, as a service manager does to stop a process, and returns
// at once: the test can go on talking to the process while it shuts down.
func (p *Process) Terminate() { p.cmd.Process.Signal(syscall.SIGTERM) }

// Exited is closed when the process has ended; ExitErr then says how.
func (p *Process) Exited() <-chan struct{} { return p.done }

// ExitErr waits for the process to end and returns its exit error (nil for status 0).
func (p *Process) ExitErr() error {
	<-p.done
	return p.err
}
