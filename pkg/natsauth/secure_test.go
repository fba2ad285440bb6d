package natsauth_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/pkg/natstest"
)

// secure is a real nats-server configured from the permission table, with the device
// registry and the callout responder running: what the all-in-one runs, in a test.
type secure struct {
	url       string
	creds     *natsauth.DevCredentials
	admin     *bus.Bus
	devices   *natsauth.Devices // as an operator provisions
	readOnly  *natsauth.Devices // the responder's (callout identity)
	responder *natsauth.Responder
}

func startSecure(t *testing.T) *secure {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ids := natsauth.Table(natsauth.TableConfig{})
	var users []string
	for _, id := range ids {
		users = append(users, id.Name)
	}
	creds, err := natsauth.EnsureDevCredentials(t.TempDir(), users)
	if err != nil {
		t.Fatal(err)
	}
	conf := natsauth.ServerConfig{
		Identities: ids,
		Password:   func(u string) string { return natsauth.Literal(creds.Passwords[u]) },
		Issuer:     natsauth.Literal(creds.IssuerPublic),
	}.Render()
	admin, err := bus.Open(ctx, bus.Config{URL: bus.Embedded, ListenPort: -1, ServerConfig: conf,
		User: natsauth.UserAdmin, Password: creds.Passwords[natsauth.UserAdmin]}, serverLog())
	if err != nil {
		t.Fatalf("secure server: %v", err)
	}
	t.Cleanup(admin.Close)
	if err := admin.EnsureStreams(ctx, bus.StreamConfig{MemoryStorage: true, TelemetryBytes: 64 << 20, EventBytes: 16 << 20}); err != nil {
		t.Fatalf("streams: %v", err)
	}
	s := &secure{url: admin.ClientURL(), creds: creds, admin: admin}

	callout := s.connect(t, natsauth.UserCallout)
	js, err := jetstream.New(callout)
	if err != nil {
		t.Fatal(err)
	}
	// The responder reads the registry as the callout identity (read-only); the test
	// provisions devices as an operator would, through another instance.
	s.readOnly, err = natsauth.OpenDevices(ctx, js, 1, quietLog())
	if err != nil {
		t.Fatalf("devices as the callout identity: %v", err)
	}
	if s.devices, err = natsauth.OpenDevices(ctx, admin, 1, quietLog()); err != nil {
		t.Fatal(err)
	}
	kicker := s.connect(t, natsauth.UserKicker)
	s.responder, err = natsauth.NewResponder(natsauth.ResponderConfig{Devices: s.readOnly, IssuerSeed: creds.IssuerSeed,
		Kicker: natsauth.SystemKicker{NC: kicker}, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	wait, err := s.responder.Start(ctx, callout) // answering from here on
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := wait(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("responder: %v", err)
		}
	}()
	t.Cleanup(wg.Wait)
	t.Cleanup(cancel)
	return s
}

func serverLog() *slog.Logger {
	if os.Getenv("NATSAUTH_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return quietLog()
}

// deniedCtx bounds an operation the server refuses: the JetStream client learns of a
// permissions violation only asynchronously, so a refused request waits for its timeout.
func deniedCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect logs in as a static identity, with its own inbox prefix.
func (s *secure) connect(t *testing.T, user string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.url, nats.UserInfo(user, s.creds.Passwords[user]), nats.CustomInboxPrefix(natsauth.InboxPrefix(user)),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // tests read LastError
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// errs collects a connection's asynchronous errors (permission violations arrive so).
type errs struct {
	mu   sync.Mutex
	list []error
}

func (e *errs) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	e.mu.Lock()
	e.list = append(e.list, err)
	e.mu.Unlock()
}

// wait returns once an error containing want arrived, failing the test otherwise.
func (e *errs) wait(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		e.mu.Lock()
		for _, err := range e.list {
			if strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
				e.mu.Unlock()
				return
			}
		}
		e.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	t.Fatalf("no error containing %q; got %v", want, e.list)
}

// device registers id and connects as it, as a tracker does.
func (s *secure) device(t *testing.T, id string) (*nats.Conn, *errs) {
	t.Helper()
	secret := s.add(t, id)
	return s.deviceWith(t, id, secret)
}

// add registers id and waits until the responder's copy of the registry has it.
func (s *secure) add(t *testing.T, id string) string {
	t.Helper()
	_, secret, err := s.devices.Add(testCtx(t), natsauth.Device{ID: id, Model: "test", Protocol: "nats"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := s.readOnly.Verify(context.Background(), id, secret); return err == nil }, "the responder to see "+id)
	return secret
}

func (s *secure) deviceWith(t *testing.T, id, secret string) (*nats.Conn, *errs) {
	t.Helper()
	e := &errs{}
	nc, err := nats.Connect(s.url, nats.UserInfo(id, secret), nats.CustomInboxPrefix(natsauth.DeviceInboxPrefix(id)),
		nats.ErrorHandler(e.handler), nats.NoReconnect(), nats.Timeout(10*time.Second))
	if err != nil {
		t.Fatalf("device %s connect: %v", id, err)
	}
	t.Cleanup(nc.Close)
	return nc, e
}

// stored counts the messages of stream whose subject matches filter.
func (s *secure) stored(t *testing.T, stream, filter string) uint64 {
	t.Helper()
	ctx := testCtx(t)
	st, err := s.admin.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

func TestAnonymousConnectIsRefused(t *testing.T) {
	s := startSecure(t)
	for name, opts := range map[string][]nats.Option{
		"anonymous":        nil,
		"unknown device":   {nats.UserInfo("veh-ghost", "whatever")},
		"wrong service pw": {nats.UserInfo(natsauth.UserAdmin, "guess")},
		"wildcard id":      {nats.UserInfo("veh.>", "x")},
	} {
		t.Run(name, func(t *testing.T) {
			nc, err := nats.Connect(s.url, append(opts, nats.NoReconnect())...)
			if err == nil {
				nc.Close()
				t.Fatal("connected; want the login refused")
			}
			if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
				t.Fatalf("connect: %v; want an authorization violation", err)
			}
		})
	}
	if st := s.responder.Stats(); st.Refused < 3 || st.Accepted != 0 {
		t.Fatalf("responder stats %+v; want the device logins refused, none accepted", st)
	}
}

func TestDeviceIsConfinedToItsOwnSubjects(t *testing.T) {
	s := startSecure(t)
	a, aerr := s.device(t, "veh-a")
	_, _ = s.device(t, "veh-b")
	ctx := testCtx(t)

	// What a tracker needs works: publish its own record and get the stream's ack.
	js, err := jetstream.New(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, bus.UpSubject("veh-a", bus.KindTelemetry), []byte("rec")); err != nil {
		t.Fatalf("device publishing its own record: %v", err)
	}
	if n := s.stored(t, bus.TelemetryStream, bus.VehicleFilter("veh-a")); n != 1 {
		t.Fatalf("veh-a has %d stored records, want 1", n)
	}
	got := make(chan *nats.Msg, 1)
	if _, err := a.Subscribe(bus.CommandSubject("veh-a"), func(m *nats.Msg) { got <- m }); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	dispatch := s.connect(t, natsauth.UserDispatch)
	if err := dispatch.Publish(bus.CommandSubject("veh-a"), []byte("cmd")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the device did not receive its own command")
	}

	pubDenied := []struct{ name, subject string }{
		{"publish as another vehicle", bus.UpSubject("veh-b", bus.KindAlarm)},
		{"another vehicle's command reply", bus.UpSubject("veh-b", bus.KindReply)},
		{"a service event", bus.EventSubject("geofence", "enter", "veh-a", "forged")},
		{"a fuel event", "fleet.evt.tracking.fuel_drain.veh-a.x"},
		{"a command to itself", bus.CommandSubject("veh-a")},
		{"a command to another", bus.CommandSubject("veh-b")},
		{"the JetStream API", "$JS.API.STREAM.INFO." + bus.TelemetryStream},
		{"a stream delete", "$JS.API.STREAM.DELETE." + bus.TelemetryStream},
		{"a consumer delete", "$JS.API.CONSUMER.DELETE." + bus.EventStream + ".dispatch-events"},
		{"a KV write", "$KV.FLEET_DEVICES.veh-a"},
		{"the audit stream", "fleet.audit.rec"},
	}
	for _, c := range pubDenied {
		t.Run(c.name, func(t *testing.T) {
			if err := a.Publish(c.subject, []byte("x")); err != nil {
				t.Fatal(err)
			}
			aerr.wait(t, "permissions violation for publish to \""+c.subject+"\"")
		})
	}
	// Through the JetStream client too: the request is refused, nothing happens.
	if _, err := js.Stream(deniedCtx(t), bus.TelemetryStream); err == nil {
		t.Fatal("device read stream info; want it refused")
	}
	if err := js.DeleteStream(deniedCtx(t), bus.TelemetryStream); err == nil {
		t.Fatal("device deleted the telemetry stream")
	}

	subDenied := []string{bus.CommandSubject("veh-b"), "fleet.down.>", "_INBOX.>", natsauth.DeviceInboxPrefix("veh-b") + ".>",
		"fleet.up.>", bus.EventWildcard(), "$SYS.REQ.USER.AUTH"}
	for _, subj := range subDenied {
		t.Run("subscribe "+subj, func(t *testing.T) {
			if _, err := a.SubscribeSync(subj); err != nil {
				t.Fatal(err)
			}
			aerr.wait(t, "permissions violation for subscription to \""+subj+"\"")
		})
	}

	// Nothing was stored for anyone else.
	if n := s.stored(t, bus.TelemetryStream, bus.VehicleFilter("veh-b")); n != 0 {
		t.Fatalf("veh-b has %d stored records, want 0", n)
	}
	if n := s.stored(t, bus.EventStream, bus.EventWildcard()); n != 0 {
		t.Fatalf("%d events stored, want 0", n)
	}
	if _, err := s.admin.Stream(ctx, bus.TelemetryStream); err != nil {
		t.Fatalf("telemetry stream after the attempts: %v", err)
	}
}

// The squatter of the issue published on the victim's subject with the Msg-Id the victim
// would use, so the victim's real alarm was dropped as a duplicate. Confined, it cannot
// publish there at all, and the victim's alarm is stored.
func TestSquatterCannotPublishOnTheVictimsSubject(t *testing.T) {
	s := startSecure(t)
	victim, _ := s.device(t, "veh-victim")
	squatter, serr := s.device(t, "veh-squat")
	ctx := testCtx(t)
	const id = "veh-victim-alarm-1"

	m := nats.NewMsg(bus.UpSubject("veh-victim", bus.KindAlarm))
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Data = []byte("squat")
	if err := squatter.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	serr.wait(t, "permissions violation for publish")

	js, _ := jetstream.New(victim)
	ack, err := js.Publish(ctx, bus.UpSubject("veh-victim", bus.KindAlarm), []byte("PANIC"), jetstream.WithMsgID(id))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Duplicate {
		t.Fatal("the victim's alarm was taken for a duplicate")
	}
	if n := s.stored(t, bus.TelemetryStream, bus.VehicleFilter("veh-victim")); n != 1 {
		t.Fatalf("victim has %d stored records, want its alarm", n)
	}
}

func TestRevocationDisconnectsALiveDevice(t *testing.T) {
	s := startSecure(t)
	ctx := testCtx(t)
	secret := s.add(t, "veh-stolen")
	closed := make(chan struct{})
	nc, err := nats.Connect(s.url, nats.UserInfo("veh-stolen", secret), nats.NoReconnect(),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := s.devices.Revoke(ctx, "veh-stolen", "ops"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("revoked device still connected after 30s")
	}
	waitFor(t, func() bool {
		_, err := s.readOnly.Verify(ctx, "veh-stolen", secret)
		return errors.Is(err, natsauth.ErrDeviceRevoked)
	}, "the responder to see the revocation")
	if _, err := nats.Connect(s.url, nats.UserInfo("veh-stolen", secret), nats.NoReconnect()); err == nil {
		t.Fatal("revoked device logged in again")
	}
	if s.responder.Stats().Kicked == 0 {
		t.Fatal("responder counted no disconnect")
	}
}

func TestRotationDisconnectsAndOldSecretFails(t *testing.T) {
	s := startSecure(t)
	ctx := testCtx(t)
	old := s.add(t, "veh-rot")
	closed := make(chan struct{})
	nc, err := nats.Connect(s.url, nats.UserInfo("veh-rot", old), nats.NoReconnect(),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, fresh, err := s.devices.Rotate(ctx, "veh-rot", "ops")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("device with a rotated secret still connected after 30s")
	}
	waitFor(t, func() bool { _, err := s.readOnly.Verify(ctx, "veh-rot", fresh); return err == nil }, "the responder to see the new secret")
	if _, err := nats.Connect(s.url, nats.UserInfo("veh-rot", old), nats.NoReconnect()); err == nil {
		t.Fatal("old secret still logs in")
	}
	nc2, err := nats.Connect(s.url, nats.UserInfo("veh-rot", fresh), nats.NoReconnect())
	if err != nil {
		t.Fatalf("new secret: %v", err)
	}
	nc2.Close()
}

// The geofence identity reads the event stream through ordered consumers (ListZoneEvents):
// each fetch after the first deletes the previous consumer. That delete is allowed, so the
// server logs no permission violation and no reader lingers; reading outside geofence's own
// events and deleting dispatch's durable stay refused.
func TestServiceDeletesItsEphemeralEventConsumers(t *testing.T) {
	s := startSecure(t)
	ctx := testCtx(t)
	e := &errs{}
	nc, err := nats.Connect(s.url, nats.UserInfo(natsauth.UserGeofence, s.creds.Passwords[natsauth.UserGeofence]),
		nats.CustomInboxPrefix(natsauth.InboxPrefix(natsauth.UserGeofence)), nats.ErrorHandler(e.handler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, bus.EventSubject(natsauth.SourceGeofence, "enter", "veh-1", fmt.Sprint(i)), []byte("e")); err != nil {
			t.Fatal(err)
		}
	}
	// dispatch's durable, which must survive.
	if _, err := natstest.JetStream(t, s.admin).CreateOrUpdateConsumer(ctx, bus.EventStream, jetstream.ConsumerConfig{
		Durable: natsauth.DispatchEventsDurable, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, bus.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.EventFilter(natsauth.SourceGeofence, "*", "veh-1")}})
	if err != nil {
		t.Fatalf("ordered consumer as geofence: %v", err)
	}
	for range 3 { // every fetch after the first replaces (deletes) the consumer before it
		mb, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for range mb.Messages() {
		}
		if err := mb.Error(); err != nil {
			t.Fatal(err)
		}
	}
	// Only the current reader and dispatch's durable remain: the replaced ones are gone.
	evs, err := s.admin.Stream(ctx, bus.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		var names []string
		for n := range evs.ConsumerNames(ctx).Name() {
			names = append(names, n)
		}
		if len(names) == 2 && slices.Contains(names, natsauth.DispatchEventsDurable) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumers of %s: %v, want the current reader and %s (replaced readers were not deleted)", bus.EventStream, names, natsauth.DispatchEventsDurable)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = nc.Flush()
	e.mu.Lock()
	for _, err := range e.list {
		if strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("permission violation while reading through ordered consumers: %v", err)
		}
	}
	e.mu.Unlock()

	// Still refused: a reader of another source's events, deleting the durable.
	if _, err := js.OrderedConsumer(deniedCtx(t), bus.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.EventSourceFilter(natsauth.SourceDispatch)}}); err == nil {
		t.Error("geofence created a reader of dispatch's events")
	}
	if err := js.DeleteConsumer(deniedCtx(t), bus.EventStream, natsauth.DispatchEventsDurable); err == nil || strings.Contains(err.Error(), "not found") {
		t.Errorf("delete dispatch's durable: %v; want a refusal", err)
	}
	if _, err := s.admin.Consumer(ctx, bus.EventStream, natsauth.DispatchEventsDurable); err != nil {
		t.Errorf("dispatch's durable: %v", err)
	}
}
