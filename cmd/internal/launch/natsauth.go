package launch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/pkg/wire"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

// The NATS side of security (docs/security.md, "NATS and devices"). The all-in-one's
// embedded server is configured from natsauth's permission table: static users for the
// services and tools, and the auth callout for everything else, which this process answers
// from the device registry. Its own connection is the "platform" identity: one process
// shares one memory, so a connection per in-process service would isolate nothing; the
// per-service binaries each log in as their own identity (--nats-user), and the table's
// test proves what each may do.

// natsSecurity is the NATS protection of one all-in-one process.
type natsSecurity struct {
	creds   *natsauth.DevCredentials
	devices *natsauth.Devices
	resp    *natsauth.Responder
	wait    func() error
	callout *nats.Conn
	kicker  *nats.Conn
	log     *slog.Logger
}

// natsCredentialsDir is where the all-in-one keeps its NATS development credentials.
func natsCredentialsDir(o Options) string {
	return filepath.Join(dataDir(o), "credentials", "nats")
}

// prepareEmbeddedNATS generates (or loads) the development NATS credentials and puts the
// server configuration and the platform's login into o.NATS. It is a no-op for an
// external server and with --insecure.
func prepareEmbeddedNATS(o *Options) (*natsauth.DevCredentials, error) {
	if o.Security.Insecure || (o.NATS.URL != "" && o.NATS.URL != bus.Embedded) {
		return nil, nil
	}
	ids := natsauth.Table(natsauth.TableConfig{Partitions: o.Streams.Partitions})
	users := make([]string, 0, len(ids))
	for _, id := range ids {
		users = append(users, id.Name)
	}
	creds, err := natsauth.EnsureDevCredentials(natsCredentialsDir(*o), users)
	if err != nil {
		return nil, fmt.Errorf("nats development credentials: %w", err)
	}
	o.NATS.ServerConfig = natsauth.ServerConfig{
		Identities: ids,
		Password:   func(u string) string { return natsauth.Literal(creds.Passwords[u]) },
		Issuer:     natsauth.Literal(creds.IssuerPublic),
		Limits:     accountLimits(o.Streams),
	}.Render()
	o.NATS.User, o.NATS.Password = natsauth.UserPlatform, creds.Passwords[natsauth.UserPlatform]
	o.NATS.InboxPrefix = natsauth.InboxPrefix(natsauth.UserPlatform)
	return creds, nil
}

// accountLimits sizes the platform account for the configured streams: their byte caps
// plus room for the buckets and a margin, and no more.
func accountLimits(s bus.StreamConfig) natsauth.AccountLimits {
	lim := natsauth.DefaultAccountLimits()
	tele, evt := s.TelemetryBytes, s.EventBytes
	if tele <= 0 {
		tele = 4 << 30
	}
	if evt <= 0 {
		evt = 1 << 30
	}
	// telemetry, the MQTT store, events, dead letters, audit (1 GiB), buckets
	need := tele + bus.MQTTStreamBytes(tele) + 3*evt + (1 << 30)
	lim.MaxMemory = max(lim.MaxMemory, need)
	lim.MaxStore = max(lim.MaxStore, need)
	return lim
}

// serviceLogin completes a per-service binary's static login: the password from its file,
// and the identity's own inbox prefix (the server lets it receive replies only there).
func serviceLogin(o *Options) error {
	if o.NATSPasswordFile != "" && o.NATS.Password == "" {
		data, err := os.ReadFile(o.NATSPasswordFile)
		if err != nil {
			return fmt.Errorf("%w: nats password: %w", ErrConfig, err)
		}
		o.NATS.Password = strings.TrimSpace(string(data))
	}
	if o.NATS.User != "" && o.NATS.InboxPrefix == "" {
		o.NATS.InboxPrefix = natsauth.InboxPrefix(o.NATS.User)
	}
	return nil
}

// startNATSAuth opens the device registry, registers the simulated fleet's devices and
// starts answering device logins. The caller runs s.run.
func startNATSAuth(ctx context.Context, o Options, b *bus.Bus, creds *natsauth.DevCredentials, log *slog.Logger) (*natsSecurity, error) {
	s := &natsSecurity{creds: creds, log: log}
	var err error
	if s.devices, err = natsauth.OpenDevices(ctx, b, o.Streams.Replicas, log); err != nil {
		return nil, err
	}
	connect := func(user string) (*nats.Conn, error) {
		nc, err := nats.Connect(b.ClientURL(), nats.UserInfo(user, creds.Passwords[user]),
			nats.CustomInboxPrefix(natsauth.InboxPrefix(user)), nats.Name("fleetwire-"+user), nats.MaxReconnects(-1))
		if err != nil {
			return nil, fmt.Errorf("connect as %s: %w", user, err)
		}
		return nc, nil
	}
	if s.callout, err = connect(natsauth.UserCallout); err != nil {
		return nil, err
	}
	if s.kicker, err = connect(natsauth.UserKicker); err != nil {
		s.close()
		return nil, err
	}
	if s.resp, err = natsauth.NewResponder(natsauth.ResponderConfig{Devices: s.devices, IssuerSeed: creds.IssuerSeed,
		Kicker: natsauth.SystemKicker{NC: s.kicker}, Log: log}); err != nil {
		s.close()
		return nil, err
	}
	// Subscribed before anything can log in as a device (the simulated fleet starts later).
	if s.wait, err = s.resp.Start(ctx, s.callout); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// run answers device logins until the context given to startNATSAuth ends.
func (s *natsSecurity) run(context.Context) error {
	defer s.close()
	err := s.wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (s *natsSecurity) close() {
	if s.callout != nil {
		s.callout.Close()
	}
	if s.kicker != nil {
		s.kicker.Close()
	}
}

// registerSimDevices registers the simulated fleet's vehicles as devices, with secrets
// kept in the credentials directory so a restart (or fleetsim run elsewhere) reuses them.
func (s *natsSecurity) registerSimDevices(ctx context.Context, ids []string, model string) (map[string]string, error) {
	secrets, err := natsauth.EnsureDeviceSecrets(s.creds.DeviceSecretsPath(), ids)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, err := s.devices.Ensure(ctx, natsauth.Device{ID: id, Model: model, Protocol: "nats"}, secrets[id], "fleetwire"); err != nil {
			return nil, fmt.Errorf("register simulated device %s: %w", id, err)
		}
	}
	return secrets, nil
}

// deviceDialer connects simulated vehicles as devices: username = vehicle id, password =
// its secret, replies under the device's own inbox prefix.
func deviceDialer(url string, secrets map[string]string) fleetsim.DeviceDialer {
	return func(ctx context.Context, id string) (*nats.Conn, error) {
		secret, ok := secrets[id]
		if !ok {
			return nil, fmt.Errorf("no device secret for %s", id)
		}
		// A login is a round trip through the responder: on a busy machine it can miss a
		// timeout, and a real tracker would simply try again.
		var err error
		for attempt := range 5 {
			var nc *nats.Conn
			nc, err = nats.Connect(url, nats.UserInfo(id, secret), nats.CustomInboxPrefix(natsauth.DeviceInboxPrefix(id)),
				nats.Name(id), nats.MaxReconnects(-1), nats.Timeout(10*time.Second))
			if err == nil {
				return nc, nil
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
			}
		}
		return nil, err
	}
}

// ExternalNATSConfig is deployments/nats/nats-server.conf: a nats-server configuration for
// a deployment of the per-service binaries, generated from the same permission table as
// the all-in-one's embedded server. Passwords and the callout issuer come from the
// environment, so the file holds no secret.
func ExternalNATSConfig() string { return externalNATSConfig(false) }

// ExternalNATSClusterConfig is deployments/nats/nats-cluster.conf: the same for each node
// of a NATS cluster, which adds the node's name and the routes, authenticated as
// natsauth.RouteUser, from the environment.
func ExternalNATSClusterConfig() string { return externalNATSConfig(true) }

// ExternalNATSAuthConfig is deployments/nats/nats-auth.conf: the accounts, users and auth
// callout alone, for a server whose other settings (listen, JetStream, cluster routes)
// another tool renders: the official NATS Helm chart includes it
// (deployments/nats/helm-values.yaml).
func ExternalNATSAuthConfig() string {
	return `# Accounts, users and the auth callout of a Fleetwire deployment (deployments/nats/nats-auth.conf),
# for inclusion into a configuration rendered elsewhere (deployments/nats/helm-values.yaml).
#
# GENERATED from pkg/natsauth's permission table; do not edit. Regenerate with
#   UPDATE_GOLDEN=1 go test ./cmd/internal/launch -run TestExternalNATSConfigIsCurrent
# The variables are those of nats-server.conf.

` + natsauth.ServerConfig{
		Identities: natsauth.Table(natsauth.TableConfig{}),
		Password:   func(u string) string { return "$" + natsauth.PasswordEnv(u) },
		Issuer:     "$" + natsauth.IssuerEnv,
		XKey:       "$" + natsauth.XKeyEnv,
		// Streams at R3: room for three copies (see natsauth.ClusterReplicas).
		Limits: clusterLimits(),
	}.Render()
}

func clusterLimits() natsauth.AccountLimits {
	l := natsauth.DefaultAccountLimits()
	l.MaxMemory *= natsauth.ClusterReplicas
	l.MaxStore *= natsauth.ClusterReplicas
	return l
}

func externalNATSConfig(clustered bool) string {
	ids := natsauth.Table(natsauth.TableConfig{})
	var b strings.Builder
	name, golden := "nats-server.conf", "TestExternalNATSConfigIsCurrent"
	if clustered {
		name = "nats-cluster.conf"
	}
	fmt.Fprintf(&b, `# nats-server configuration of a Fleetwire deployment (deployments/nats/%s).
#
# GENERATED from pkg/natsauth's permission table; do not edit. Regenerate with
#   UPDATE_GOLDEN=1 go test ./cmd/internal/launch -run %s
# (the test fails whenever this file and the table disagree).
#
# Each identity's password comes from the environment variable FLEETWIRE_NATS_<USER>_PASSWORD
# (e.g. FLEETWIRE_NATS_TRACKING_PASSWORD), and the auth callout issuer's public account nkey
# from FLEETWIRE_NATS_CALLOUT_ISSUER; the responder (cmd/callout) signs with its seed. Login
# requests, which carry device passwords, are encrypted to the responder's curve key
# FLEETWIRE_NATS_CALLOUT_XKEY (docs/security.md). nats-server refuses to start when one of
# them is unset.
`, name, golden)
	if clustered {
		fmt.Fprintf(&b, `#
# One node of a cluster (3 or more for R3 streams). Each node also needs
# %s (its name, unique in the cluster: the pod's name), %s (the
# route identity's password, the same on every node) and %s, the route URLs
# with the route identity's credentials in each, every node included (a node skips itself):
#   [nats://%s:PASSWORD@nats-0.nats:6222, nats://%s:PASSWORD@nats-1.nats:6222, ...]

server_name: $%s
`, natsauth.ServerNameEnv, natsauth.RoutePasswordEnv, natsauth.RoutesEnv, natsauth.RouteUser, natsauth.RouteUser, natsauth.ServerNameEnv)
	}
	b.WriteString(`
listen: 0.0.0.0:4222
http: 127.0.0.1:8222
`)
	fmt.Fprintf(&b, "max_payload: %d\n", wire.MaxMessageBytes)
	b.WriteString("jetstream {\n  store_dir: /data/jetstream\n}\n\n")
	cfg := natsauth.ServerConfig{
		Identities: ids,
		Password:   func(u string) string { return "$" + natsauth.PasswordEnv(u) },
		Issuer:     "$" + natsauth.IssuerEnv,
		XKey:       "$" + natsauth.XKeyEnv,
	}
	if clustered {
		cfg.Cluster = &natsauth.Cluster{Name: "fleetwire", Listen: "0.0.0.0:6222",
			Password: "$" + natsauth.RoutePasswordEnv, Routes: "$" + natsauth.RoutesEnv}
	}
	b.WriteString(cfg.Render())
	return b.String()
}
