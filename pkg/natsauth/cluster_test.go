package natsauth_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/pkg/natstest"
)

// clusterConfig renders node i of a cluster from the permission table with route
// authentication: what a clustered deployment runs.
func clusterConfig(creds *natsauth.DevCredentials, routePassword string) func(int, []string) string {
	return func(i int, addrs []string) string {
		return natsauth.ServerConfig{
			Identities: natsauth.Table(natsauth.TableConfig{}),
			Password:   func(u string) string { return natsauth.Literal(creds.Passwords[u]) },
			Issuer:     natsauth.Literal(creds.IssuerPublic),
			Cluster: &natsauth.Cluster{Name: "fleetwire", Listen: addrs[i],
				Password: natsauth.Literal(routePassword), Routes: natsauth.RouteURLs(routePassword, addrs...)},
		}.Render()
	}
}

// routeLogin opens a raw connection to a route port and logs in as a route with user and
// password; it returns the server's first answer to the CONNECT and a PING.
func routeLogin(t *testing.T, addr, user, password string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("route port %s: %q, %v", addr, line, err)
	}
	connect, _ := json.Marshal(map[string]any{"user": user, "pass": password, "cluster": "fleetwire", "name": "intruder", "headers": true})
	if _, err := conn.Write([]byte("CONNECT " + string(connect) + "\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "closed: " + err.Error()
		}
		// A route that was let in gets the cluster's subscriptions and INFOs; what
		// matters is an error or the PONG.
		if strings.HasPrefix(line, "-ERR") || strings.HasPrefix(line, "PONG") {
			return strings.TrimSpace(line)
		}
	}
}

// A cluster rendered by natsauth forms with authenticated routes and carries R3 streams;
// the route credential is good only on the route port, and no client identity's password
// opens a route.
func TestClusterRoutesAuthenticate(t *testing.T) {
	ids := natsauth.Table(natsauth.TableConfig{})
	var users []string
	for _, id := range ids {
		users = append(users, id.Name)
	}
	creds, err := natsauth.EnsureDevCredentials(t.TempDir(), users)
	if err != nil {
		t.Fatal(err)
	}
	routePW := natsauth.NewServicePassword()
	c := natstest.NewClusterWith(t, 3, natstest.ClusterOptions{
		Config: clusterConfig(creds, routePW),
		User:   natsauth.UserAdmin, Password: creds.Passwords[natsauth.UserAdmin], InboxPrefix: natsauth.InboxPrefix(natsauth.UserAdmin),
	})
	admin := c.Bus(t, "admin", nil)
	// The default stream sizes at R3: the account limits must make room for them.
	c.EnsureStreams(t, admin, bus.StreamConfig{Replicas: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := admin.Stream(ctx, bus.TelemetryStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("telemetry stream: replicas %d, cluster %+v", info.Config.Replicas, info.Cluster)
	}

	for _, tc := range []struct {
		name, user, password string
		admitted             bool
	}{
		{"the route identity", natsauth.RouteUser, routePW, true},
		{"a wrong route password", natsauth.RouteUser, routePW + "x", false},
		{"a service's client password", natsauth.UserTracking, creds.Passwords[natsauth.UserTracking], false},
		{"the admin's client password", natsauth.UserAdmin, creds.Passwords[natsauth.UserAdmin], false},
	} {
		t.Run("route port/"+tc.name, func(t *testing.T) {
			got := routeLogin(t, c.RouteAddr(0), tc.user, tc.password)
			if tc.admitted != (got == "PONG") {
				t.Fatalf("route login as %s: %s (admitted: want %v)", tc.user, got, tc.admitted)
			}
		})
	}
	// The route credential on the client port: not a client user, so it goes to the
	// auth callout like an unknown device and is refused (no responder answers here).
	nc, err := nats.Connect(c.URL(), nats.UserInfo(natsauth.RouteUser, routePW), nats.MaxReconnects(0), nats.Timeout(10*time.Second))
	if err == nil {
		nc.Close()
		t.Fatal("the route identity logged in on the client port")
	}
}
