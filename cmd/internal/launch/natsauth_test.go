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

const externalConf = "../../../deployments/nats/nats-server.conf"

// The external deployment's nats-server configuration is generated from the permission
// table: it cannot drift from what the embedded server enforces (and tests).
func TestExternalNATSConfigIsCurrent(t *testing.T) {
	want := ExternalNATSConfig()
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.MkdirAll(filepath.Dir(externalConf), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(externalConf, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(externalConf)
	if err != nil {
		t.Fatalf("%v (generate it: UPDATE_GOLDEN=1 go test ./cmd/internal/launch -run TestExternalNATSConfigIsCurrent)", err)
	}
	if string(got) != want {
		t.Fatalf("%s is stale: regenerate with UPDATE_GOLDEN=1 go test ./cmd/internal/launch -run TestExternalNATSConfigIsCurrent", externalConf)
	}
	// And nats-server accepts it, with its variables set.
	for _, id := range natsauth.Table(natsauth.TableConfig{}) {
		t.Setenv(natsauth.PasswordEnv(id.Name), "pw-"+id.Name)
	}
	t.Setenv(natsauth.IssuerEnv, "ABJHLOVMPA4CI6R5KLNGOB4GSLNIY7IOUPAJC4YFNDLQVIOBYQGUWVLA")
	t.Setenv(natsauth.XKeyEnv, "XAB3NANV3M6N7AHSQP2U5FRWKKUT7EG2ZXXABV4XVXYQRJGM4S2CZGHT")
	opts, err := server.ProcessConfigFile(externalConf)
	if err != nil {
		t.Fatalf("nats-server rejects %s: %v", externalConf, err)
	}
	if opts.AuthCallout == nil || opts.AuthCallout.Account != natsauth.Account {
		t.Fatalf("no auth callout into %s: %+v", natsauth.Account, opts.AuthCallout)
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
