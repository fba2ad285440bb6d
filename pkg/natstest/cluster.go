package natstest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/eventpub"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// Cluster is a JetStream cluster of real nats-servers embedded in the test process, each
// on its own loopback client and route ports, each with its own store directory. Nodes
// can be stopped and started again on the same ports and directories, as a restarted
// server would be.
type Cluster struct {
	t     testing.TB
	opts  ClusterOptions
	mu    sync.Mutex
	nodes []*node
}

// ClusterOptions configure the nodes as a secured deployment's are.
type ClusterOptions struct {
	// Config, when set, is node i's configuration text (authorization and the cluster
	// block with its routes; pkg/natsauth renders both), given every node's route
	// address. Without it the nodes are open and route to each other unauthenticated.
	Config func(i int, routeAddrs []string) string
	// User, Password and InboxPrefix are the login of Bus.
	User, Password, InboxPrefix string
}

type node struct {
	name       string
	clientPort int
	routePort  int
	dir        string
	srv        *server.Server // nil while stopped
}

// NewCluster starts n clustered servers (n >= 3 for R3 streams) and waits until
// JetStream has elected a meta leader. They are shut down when the test ends.
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	return NewClusterWith(t, n, ClusterOptions{})
}

// NewClusterWith is NewCluster with the nodes configured by o.
func NewClusterWith(t testing.TB, n int, o ClusterOptions) *Cluster {
	t.Helper()
	c := &Cluster{t: t, opts: o}
	ports := freePorts(t, 2*n)
	base := t.TempDir()
	for i := 0; i < n; i++ {
		c.nodes = append(c.nodes, &node{
			name:       fmt.Sprintf("n%d", i),
			clientPort: ports[2*i],
			routePort:  ports[2*i+1],
			dir:        filepath.Join(base, fmt.Sprintf("n%d", i)),
		})
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.Stop(i)
		}
	})
	for i := range c.nodes {
		c.Start(i)
	}
	c.WaitReady(60 * time.Second)
	return c
}

// freePorts reserves distinct free loopback ports (released before the servers bind
// them; a clash with another process in between fails the start loudly).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var out []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: free port: %v", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return out
}

// Start starts node i (again), on its ports and store directory.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	nd := c.nodes[i]
	if nd.srv != nil {
		return
	}
	var routes, addrs []string
	for j, o := range c.nodes {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", o.routePort))
		if j != i {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", o.routePort))
		}
	}
	opts := &server.Options{}
	if c.opts.Config != nil {
		if err := opts.ProcessConfigString(c.opts.Config(i, addrs)); err != nil {
			c.t.Fatalf("natstest: cluster node %s configuration: %v", nd.name, err)
		}
	} else {
		opts.Cluster = server.ClusterOpts{Name: "fleetwire-test", Host: "127.0.0.1", Port: nd.routePort}
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
	}
	opts.ServerName = nd.name
	opts.Host, opts.Port = "127.0.0.1", nd.clientPort
	opts.JetStream, opts.StoreDir = true, nd.dir
	opts.NoSigs = true
	opts.MaxPayload = wire.MaxMessageBytes
	srv, err := server.NewServer(opts)
	if err != nil {
		c.t.Fatalf("natstest: cluster node %s: %v", nd.name, err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		c.t.Fatalf("natstest: cluster node %s not ready", nd.name)
	}
	nd.srv = srv
}

// Stop shuts node i down (its data stays for Start).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	srv := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// RouteAddr is node i's route listener (host:port).
func (c *Cluster) RouteAddr(i int) string {
	return fmt.Sprintf("127.0.0.1:%d", c.nodes[i].routePort)
}

// Server returns node i's server (nil while stopped).
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// URL is the client URL listing every node, as services are configured in a cluster.
func (c *Cluster) URL() string {
	var us []string
	for _, nd := range c.nodes {
		us = append(us, fmt.Sprintf("nats://127.0.0.1:%d", nd.clientPort))
	}
	return strings.Join(us, ",")
}

// WaitReady waits until every running node sees a JetStream meta leader.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		c.mu.Lock()
		for _, nd := range c.nodes {
			if nd.srv != nil && !hasMetaLeader(nd.srv) {
				ok = false
			}
		}
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: cluster has no JetStream meta leader after %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func hasMetaLeader(s *server.Server) bool {
	raw, err := s.Jsz(&server.JSzOptions{})
	return err == nil && raw.Meta != nil && raw.Meta.Leader != ""
}

// Bus opens a connection to the cluster through the URL listing every node, closed when
// the test ends.
func (c *Cluster) Bus(t testing.TB, name string, log *slog.Logger) *bus.Bus {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{URL: c.URL(), Name: name,
		User: c.opts.User, Password: c.opts.Password, InboxPrefix: c.opts.InboxPrefix}, log)
	if err != nil {
		t.Fatalf("natstest: cluster connection: %v", err)
	}
	t.Cleanup(b.Close)
	eventpub.RaiseDeadLetters(b)
	return b
}

// EnsureStreams provisions Fleetwire's streams on the cluster with cfg (file storage
// unless cfg says otherwise), retrying while a just-formed cluster has not yet placed
// its first stream group (a request then goes unanswered rather than failing).
func (c *Cluster) EnsureStreams(t testing.TB, b *bus.Bus, cfg bus.StreamConfig) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := b.EnsureStreams(ctx, cfg)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: cluster streams: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
