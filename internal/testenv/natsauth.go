package testenv

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// StartNATSWith starts a JetStream-enabled server on a free loopback port, like
// StartNATS, once configure has adjusted its options: TLS, authentication, a
// cluster. It is shut down when the test ends.
func StartNATSWith(t testing.TB, configure func(*server.Options)) *NATS {
	t.Helper()
	n := &NATS{t: t, opts: &server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}}
	configure(n.opts)
	n.start()
	n.opts.Port = n.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.Stop)
	return n
}

// StartNATSCluster starts size JetStream servers routed into one cluster, each
// adjusted by configure (which may be nil), and waits until JetStream has elected
// its leader.
func StartNATSCluster(t testing.TB, size int, configure func(*server.Options)) []*NATS {
	t.Helper()
	ports := make([]int, size)
	routes := make([]*url.URL, size)
	for i := range size {
		addr := FreeAddr(t)
		_, port, _ := net.SplitHostPort(addr)
		ports[i], _ = strconv.Atoi(port)
		routes[i] = &url.URL{Scheme: "nats", Host: addr}
	}
	servers := make([]*NATS, size)
	for i := range size {
		servers[i] = StartNATSWith(t, func(o *server.Options) {
			o.ServerName = fmt.Sprintf("n%d", i+1)
			o.Cluster = server.ClusterOpts{Name: "test-cluster", Host: "127.0.0.1", Port: ports[i]}
			o.Routes = routes // a server skips the route to itself
			if configure != nil {
				configure(o)
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for !clusterReady(servers) {
		if time.Now().After(deadline) {
			t.Fatalf("the NATS cluster elected no JetStream leader within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return servers
}

func clusterReady(servers []*NATS) bool {
	leader := false
	for _, n := range servers {
		if !n.srv.JetStreamIsCurrent() {
			return false
		}
		leader = leader || n.srv.JetStreamIsLeader()
	}
	return leader
}

// Name is the server's name in its cluster.
func (n *NATS) Name() string { return n.srv.Name() }

// HasClient reports whether a client connection named name is open on this server.
func (n *NATS) HasClient(name string) bool {
	connz, err := n.srv.Connz(&server.ConnzOptions{})
	if err != nil {
		n.t.Fatalf("connz: %v", err)
	}
	for _, c := range connz.Conns {
		if c.Name == name {
			return true
		}
	}
	return false
}

// NewNKeyUser makes an NKey user: the file holding its seed, for the client, and its
// public key, for the server's list of users.
func NewNKeyUser(t testing.TB) (seedFile, publicKey string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	publicKey, _ = kp.PublicKey()
	seedFile = filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return seedFile, publicKey
}

// NATSOperator is a decentralized-auth trust chain for a server in operator mode:
// an operator, a system account, and one application account with JetStream whose
// users authenticate with .creds files (a user JWT and its NKey seed), as `nsc`
// would set them up. Account JWTs are served from memory.
type NATSOperator struct {
	t        testing.TB
	operator *jwt.OperatorClaims
	system   string
	account  nkeys.KeyPair
	resolver *server.MemAccResolver
}

// NewNATSOperator makes the operator and its two accounts.
func NewNATSOperator(t testing.TB) *NATSOperator {
	t.Helper()
	opKP, _ := nkeys.CreateOperator()
	opPub, _ := opKP.PublicKey()
	o := &NATSOperator{t: t, resolver: &server.MemAccResolver{}}

	sysKP, _ := nkeys.CreateAccount()
	o.system, _ = sysKP.PublicKey()
	sys := jwt.NewAccountClaims(o.system)
	sys.Name = "SYS"
	o.store(sys, opKP)

	o.account, _ = nkeys.CreateAccount()
	appPub, _ := o.account.PublicKey()
	app := jwt.NewAccountClaims(appPub)
	app.Name = "APP"
	app.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	o.store(app, opKP)

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "test-operator"
	oc.SystemAccount = o.system
	token, err := oc.Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	// The server wants the claims as a decoded JWT, issuer and all.
	if o.operator, err = jwt.DecodeOperatorClaims(token); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *NATSOperator) store(ac *jwt.AccountClaims, signer nkeys.KeyPair) {
	o.t.Helper()
	token, err := ac.Encode(signer)
	if err != nil {
		o.t.Fatal(err)
	}
	if err := o.resolver.Store(ac.Subject, token); err != nil {
		o.t.Fatal(err)
	}
}

// Configure puts a server in operator mode, trusting this operator.
func (o *NATSOperator) Configure(opts *server.Options) {
	opts.TrustedOperators = []*jwt.OperatorClaims{o.operator}
	opts.AccountResolver = o.resolver
	opts.SystemAccount = o.system
}

// UserCreds issues a user of the application account and writes its .creds file.
func (o *NATSOperator) UserCreds(name string) string {
	o.t.Helper()
	return o.creds(name, o.account)
}

// ForeignCreds issues a user signed by an account the operator never heard of:
// well-formed credentials the server must refuse.
func (o *NATSOperator) ForeignCreds(name string) string {
	o.t.Helper()
	stranger, _ := nkeys.CreateAccount()
	return o.creds(name, stranger)
}

func (o *NATSOperator) creds(name string, account nkeys.KeyPair) string {
	o.t.Helper()
	userKP, _ := nkeys.CreateUser()
	userPub, _ := userKP.PublicKey()
	seed, _ := userKP.Seed()
	uc := jwt.NewUserClaims(userPub)
	uc.Name = name
	token, err := uc.Encode(account)
	if err != nil {
		o.t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		o.t.Fatal(err)
	}
	path := filepath.Join(o.t.TempDir(), name+".creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		o.t.Fatal(err)
	}
	return path
}
