package launch

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
)

// externalDeployment is a nats-server started from deployments/nats/nats-server.conf (the
// file compose and Kubernetes load, with its variables set as they would set them), with
// nothing of Fleetwire's inside it.
type externalDeployment struct {
	url       string
	env       map[string]string // what the deployment's secrets hold
	passwords map[string]string
}

func startExternalNATS(t *testing.T) *externalDeployment {
	t.Helper()
	d := &externalDeployment{env: map[string]string{}, passwords: map[string]string{}}
	for _, id := range natsauth.Table(natsauth.TableConfig{}) {
		pw := natsauth.NewServicePassword()
		d.passwords[id.Name] = pw
		d.env[natsauth.PasswordEnv(id.Name)] = pw
	}
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	xkey, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		kp         nkeys.KeyPair
		pub, seedV string
	}{{issuer, natsauth.IssuerEnv, natsauth.IssuerEnv + "_SEED"}, {xkey, natsauth.XKeyEnv, natsauth.XKeyEnv + "_SEED"}} {
		pub, _ := k.kp.PublicKey()
		seed, _ := k.kp.Seed()
		d.env[k.pub], d.env[k.seedV] = pub, string(seed)
	}
	// The server reads the passwords and public keys from its environment, as in compose.
	for k, v := range d.env {
		if !strings.HasSuffix(k, "_SEED") {
			t.Setenv(k, v)
		}
	}
	opts, err := server.ProcessConfigFile(externalConf)
	if err != nil {
		t.Fatalf("nats-server rejects %s: %v", externalConf, err)
	}
	if opts.AuthCallout == nil || opts.AuthCallout.XKey == "" {
		t.Fatalf("%s: the auth callout encrypts no requests: %+v", externalConf, opts.AuthCallout)
	}
	// Only what a test cannot share with other tests changes: ports and the store.
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.StoreDir = t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(30 * time.Second) {
		t.Fatal("external nats-server not ready")
	}
	d.url = ns.ClientURL()
	return d
}

func (d *externalDeployment) connect(t *testing.T, user string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(d.url, append([]nats.Option{nats.UserInfo(user, d.passwords[user]),
		nats.CustomInboxPrefix(natsauth.InboxPrefix(user))}, opts...)...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startCallout runs cmd/callout's main against the deployment, configured by environment
// as compose and Kubernetes configure it, and returns once it answers logins.
func (d *externalDeployment) startCallout(t *testing.T) {
	t.Helper()
	env := map[string]string{"NATS_URL": d.url, "FLEETWIRE_METRICS_ADDR": "127.0.0.1:0", "FLEETWIRE_LOG_LEVEL": "error"}
	for _, k := range []string{natsauth.PasswordEnv(natsauth.UserCallout), natsauth.PasswordEnv(natsauth.UserKicker),
		natsauth.IssuerEnv + "_SEED", natsauth.XKeyEnv + "_SEED"} {
		env[k] = d.env[k]
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- CalloutMain(ctx, nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard,
			func(*natsauth.Responder) { close(ready) })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("callout: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("callout stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("callout not answering")
	}
}

// Devices log in to an external nats-server through the stand-alone responder: a
// registered device with its secret, confined to its own subjects; a wrong secret and a
// revoked device are refused, and revocation closes the live connection.
func TestExternalDeviceLoginThroughCallout(t *testing.T) {
	d := startExternalNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The platform's streams, as the services create them at start.
	admin, err := bus.Open(ctx, bus.Config{URL: d.url, User: natsauth.UserAdmin, Password: d.passwords[natsauth.UserAdmin]}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.EnsureStreams(ctx, bus.StreamConfig{MemoryStorage: true, TelemetryBytes: 16 << 20, EventBytes: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	// The provisioning service's identity issues the credentials.
	js, err := jetstream.New(d.connect(t, natsauth.UserDevices))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := natsauth.OpenDevices(ctx, js, 1, quietLog())
	if err != nil {
		t.Fatalf("device registry as the devices identity: %v", err)
	}
	_, secret, err := reg.Add(ctx, natsauth.Device{ID: "truck-1", Model: "test"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.Add(ctx, natsauth.Device{ID: "truck-2", Model: "test"}, "test"); err != nil {
		t.Fatal(err)
	}

	deviceConnect := func(id, secret string, opts ...nats.Option) (*nats.Conn, error) {
		return nats.Connect(d.url, append([]nats.Option{nats.UserInfo(id, secret),
			nats.CustomInboxPrefix(natsauth.DeviceInboxPrefix(id)), nats.Timeout(10 * time.Second)}, opts...)...)
	}
	// Without a responder no device gets in.
	if nc, err := deviceConnect("truck-1", secret); err == nil {
		nc.Close()
		t.Fatal("a device logged in with no responder running")
	}

	d.startCallout(t)

	var mu sync.Mutex
	var asyncErrs []error
	closed := make(chan struct{})
	dev, err := deviceConnect("truck-1", secret,
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			asyncErrs = append(asyncErrs, err)
			mu.Unlock()
		}),
		nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("registered device refused: %v", err)
	}
	defer dev.Close()

	// Its own subject reaches the telemetry stream (acknowledged by JetStream).
	djs, err := jetstream.New(dev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := djs.Publish(ctx, "fleet.up.truck-1.fix", []byte(`{}`)); err != nil {
		t.Fatalf("device publishing on its own subject: %v", err)
	}
	// Another vehicle's subject is refused by the server and stored nowhere.
	if err := dev.Publish("fleet.up.truck-2.fix", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := dev.Publish("fleet.evt.dispatch.alert", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	_ = dev.Flush()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := 0
		for _, e := range asyncErrs {
			if errors.Is(e, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(e.Error()), "permissions violation") {
				n++
			}
		}
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no permission violations for publishing as another vehicle and on fleet.evt: %v", asyncErrs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	info, err := admin.Stream(ctx, bus.TelemetryStream)
	if err != nil {
		t.Fatal(err)
	}
	st, err := info.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State.Msgs != 1 {
		t.Fatalf("telemetry stream holds %d messages, want only the device's own one", st.State.Msgs)
	}

	// A wrong secret, an unknown id and an anonymous login are refused.
	for _, c := range []struct{ name, id, secret string }{
		{"wrong secret", "truck-1", "not-the-secret"},
		{"unknown device", "truck-999", secret},
		{"anonymous", "", ""},
	} {
		nc, err := deviceConnect(c.id, c.secret)
		if err == nil {
			nc.Close()
			t.Errorf("%s: logged in", c.name)
		} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("%s: %v, want an authorization violation", c.name, err)
		}
	}

	// Revocation closes the live connection and refuses the next login.
	if _, err := reg.Revoke(ctx, "truck-1", "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("the revoked device is still connected")
	}
	if nc, err := deviceConnect("truck-1", secret); err == nil {
		nc.Close()
		t.Fatal("a revoked device logged in again")
	}
}
