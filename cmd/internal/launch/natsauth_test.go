package launch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/services/dispatch"
	"github.com/fleetwire/fleetwire/services/geofence"
	"github.com/fleetwire/fleetwire/services/maintenance"
)

const (
	externalConf        = "../../../deployments/nats/nats-server.conf"
	externalClusterConf = "../../../deployments/nats/nats-cluster.conf"
	externalAuthConf    = "../../../deployments/nats/nats-auth.conf"
)

// The external deployment's nats-server configurations (one server, and one node of a
// cluster) are generated from the permission table: they cannot drift from what the
// embedded server enforces (and tests).
func TestExternalNATSConfigIsCurrent(t *testing.T) {
	for _, tc := range []struct {
		path      string
		render    func() string
		clustered bool
	}{
		{externalConf, ExternalNATSConfig, false},
		{externalClusterConf, ExternalNATSClusterConfig, true},
		{externalAuthConf, ExternalNATSAuthConfig, false},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			want := tc.render()
			if os.Getenv("UPDATE_GOLDEN") == "1" {
				if err := os.MkdirAll(filepath.Dir(tc.path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(tc.path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(tc.path)
			if err != nil {
				t.Fatalf("%v (generate it: UPDATE_GOLDEN=1 go test ./cmd/internal/launch -run TestExternalNATSConfigIsCurrent)", err)
			}
			if string(got) != want {
				t.Fatalf("%s is stale: regenerate with UPDATE_GOLDEN=1 go test ./cmd/internal/launch -run TestExternalNATSConfigIsCurrent", tc.path)
			}
			// And nats-server accepts it, with its variables set.
			for _, id := range natsauth.Table(natsauth.TableConfig{}) {
				t.Setenv(natsauth.PasswordEnv(id.Name), "pw-"+id.Name)
			}
			t.Setenv(natsauth.IssuerEnv, "ABJHLOVMPA4CI6R5KLNGOB4GSLNIY7IOUPAJC4YFNDLQVIOBYQGUWVLA")
			t.Setenv(natsauth.XKeyEnv, "XAB3NANV3M6N7AHSQP2U5FRWKKUT7EG2ZXXABV4XVXYQRJGM4S2CZGHT")
			t.Setenv(natsauth.ServerNameEnv, "nats-1")
			t.Setenv(natsauth.RoutePasswordEnv, "routepw")
			t.Setenv(natsauth.RoutesEnv, natsauth.RouteURLs("routepw", "nats-1:6222", "nats-2:6222", "nats-3:6222"))
			opts, err := server.ProcessConfigFile(tc.path)
			if err != nil {
				t.Fatalf("nats-server rejects %s: %v", tc.path, err)
			}
			if opts.AuthCallout == nil || opts.AuthCallout.Account != natsauth.Account {
				t.Fatalf("no auth callout into %s: %+v", natsauth.Account, opts.AuthCallout)
			}
			if !tc.clustered {
				if opts.Cluster.Port != 0 || len(opts.Routes) != 0 {
					t.Fatalf("a single server with a cluster port: %+v", opts.Cluster)
				}
				return
			}
			if opts.ServerName != "nats-1" || opts.Cluster.Port != 6222 || len(opts.Routes) != 3 {
				t.Fatalf("cluster node: name %q, route port %d, routes %v", opts.ServerName, opts.Cluster.Port, opts.Routes)
			}
			if opts.Cluster.Username != natsauth.RouteUser || opts.Cluster.Password != "routepw" {
				t.Fatalf("routes accepted without the route identity: user %q", opts.Cluster.Username)
			}
			for _, r := range opts.Routes {
				if pw, _ := r.User.Password(); r.User.Username() != natsauth.RouteUser || pw != "routepw" {
					t.Fatalf("route %s does not log in as the route identity", r.Redacted())
				}
			}
		})
	}
}

// natsauth names the services' buckets, sources and durables without importing them
// (pkg never imports services); these must agree with the services' own constants.
func TestNATSAuthAgreesWithTheServices(t *testing.T) {
	for _, c := range []struct{ name, got, want string }{
		{"zone bucket", natsauth.ZonesBucket, geofence.DefaultZoneBucket},
		{"geofence source", natsauth.SourceGeofence, geofence.Source},
		{"maintenance source", natsauth.SourceMaintenance, maintenance.Source},
		{"dispatch source", natsauth.SourceDispatch, dispatch.SourceDispatch},
		{"tracking", natsauth.UserTracking, Tracking},
		{"geofence", natsauth.UserGeofence, Geofence},
		{"maintenance", natsauth.UserMaintenance, Maintenance},
		{"dispatch", natsauth.UserDispatch, Dispatch},
		{"teltonika", natsauth.UserTeltonika, Teltonika},
		{"devices", natsauth.UserDevices, Devices},
	} {
		if c.got != c.want {
			t.Errorf("%s: natsauth says %q, the service %q", c.name, c.got, c.want)
		}
	}
	if !strings.Contains(ExternalNATSConfig(), natsauth.DispatchEventsDurable) {
		t.Error("dispatch's event durable is not in the configuration")
	}
}
