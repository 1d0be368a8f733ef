package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy in front of a service. Cutting it makes the service
// unreachable to whatever was pointed at the proxy, without stopping the service,
// which other tests may be sharing.
type Proxy struct {
	ln      net.Listener
	targets []string
	next    int // the target the next connection tries first

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewProxy starts a proxy on a free loopback port that forwards to target, a
// host:port such as 127.0.0.1:9200. It is closed when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	return NewRoundRobinProxy(t, target)
}

// NewRoundRobinProxy is a load balancer in front of replicas: each new connection
// goes to the next target in turn, skipping any that refuses it (a stopped
// replica), as a balancer with health checks would.
func NewRoundRobinProxy(t testing.TB, targets ...string) *Proxy {
	t.Helper()
	for _, target := range targets {
		if _, _, err := net.SplitHostPort(target); err != nil {
			t.Fatalf("proxy target %q is not a host:port", target)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, targets: targets, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut drops every open connection and closes each new one at once, until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Restore forwards new connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed at the end of the test
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			client.Close()
			continue
		}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.forward(client)
	}
}

func (p *Proxy) forward(client net.Conn) {
	defer p.wg.Done()
	server, err := p.dial()
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, server) {
		return
	}
	defer p.untrack(client, server)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.Close() // ends the other direction's copy too
		src.Close()
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	<-done
}

// dial connects to the next target in turn that accepts.
func (p *Proxy) dial() (net.Conn, error) {
	p.mu.Lock()
	first := p.next
	p.next = (p.next + 1) % len(p.targets)
	p.mu.Unlock()
	var err error
	for i := range p.targets {
		var c net.Conn
		if c, err = net.Dial("tcp", p.targets[(first+i)%len(p.targets)]); err == nil {
			return c, nil
		}
	}
	return nil, err
}

// track registers a connection pair, unless the proxy was cut meanwhile.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		delete(p.conns, c)
	}
}
