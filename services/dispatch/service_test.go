package dispatch

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// waitTimeout bounds every poll: generous, because the machine is shared.
const waitTimeout = 20 * time.Second

func testLog() *slog.Logger {
	if os.Getenv("DBG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.SweepEvery = 50 * time.Millisecond
	cfg.WatchPoll = 200 * time.Millisecond
	return cfg
}

// harness runs the service on a real embedded NATS server with a real gRPC server on a
// loopback port, and can restart the service on the same bus and store.
type harness struct {
	t      testing.TB
	b      *bus.Bus
	st     Store
	cfg    Config
	svc    *Service
	stop   context.CancelFunc
	done   chan struct{}
	alerts fleetv1.AlertServiceClient
	cmds   fleetv1.CommandServiceClient
	// groups is the vehicle registry's key-value mirror, as tracking's registry writes it.
	groups *auth.Groups
}

// register puts vehicles in the registry, as tracking's RegisterVehicle does.
func (h *harness) register(vehicles ...string) {
	h.t.Helper()
	for _, v := range vehicles {
		if err := h.groups.Set(h.ctx(), v, nil); err != nil {
			h.t.Fatal(err)
		}
	}
}

func newHarness(t testing.TB, st Store) *harness {
	t.Helper()
	return newHarnessWith(t, st, testConfig())
}

func newHarnessWith(t testing.TB, st Store, cfg Config) *harness {
	t.Helper()
	b := natstest.Open(t, natstest.Options{Log: testLog()})
	h := &harness{t: t, b: b, st: st, cfg: cfg}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	g, err := auth.OpenGroups(ctx, b, 1, testLog())
	if err != nil {
		t.Fatal(err)
	}
	h.groups = g
	h.start()
	t.Cleanup(h.shutdown)
	return h
}

func (h *harness) start() {
	h.t.Helper()
	svc, err := New(h.cfg, h.b, h.st, testLog(), nil)
	if err != nil {
		h.t.Fatal(err)
	}
	svc.UseRegistry(h.groups)
	gs := grpcserver.New(testLog(), nil)
	svc.Register(gs.GRPC)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.svc, h.stop, h.done = svc, cancel, make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := svc.Run(ctx); err != nil {
			h.t.Errorf("Run: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		_ = gs.Serve(ctx, time.Second)
	}()
	go func() { wg.Wait(); close(h.done) }()
	conn, err := grpc.NewClient(gs.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	h.alerts, h.cmds = fleetv1.NewAlertServiceClient(conn), fleetv1.NewCommandServiceClient(conn)
}

func (h *harness) shutdown() {
	if h.stop != nil {
		h.stop()
		<-h.done
		h.stop = nil
	}
}

// restart stops the service as a crash-free process exit would, then starts a new one.
func (h *harness) restart() {
	h.shutdown()
	h.start()
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	h.t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitApplied waits until the service has applied vehicle's record of device time at.
func (h *harness) waitApplied(vehicle string, at time.Time) {
	h.t.Helper()
	eventually(h.t, "record at "+at.String()+" applied", func() bool {
		v, ok, err := h.st.GetVehicle(context.Background(), vehicle)
		return err == nil && ok && !v.LastDeviceTime.Before(at)
	})
}

func (h *harness) listAlerts(req *fleetv1.ListAlertsRequest) []*fleetv1.Alert {
	h.t.Helper()
	resp, err := h.alerts.ListAlerts(h.ctx(), req)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.GetAlerts()
}

func (h *harness) waitCommand(id string, want fleetv1.CommandState) *fleetv1.Command {
	h.t.Helper()
	var last *fleetv1.Command
	eventually(h.t, "command "+id+" "+want.String(), func() bool {
		resp, err := h.cmds.GetCommand(h.ctx(), &fleetv1.GetCommandRequest{CommandId: id})
		if err != nil {
			h.t.Fatal(err)
		}
		last = resp.GetCommand()
		return last.GetState() == want
	})
	return last
}

// device is a scripted tracker on the real bus: it publishes protobuf batches and obeys
// commands (accepted, then executed), executing each command id once.
type device struct {
	t       testing.TB
	b       *bus.Bus
	vehicle string
	seq     uint64

	mu          sync.Mutex
	received    []string // command ids, in arrival order
	kinds       []fleetv1.CommandKind
	immobilized bool
	speedKmh    float64 // what its own receiver says (checked before an engine cut)
}

func (d *device) setSpeed(kmh float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.speedKmh = kmh
}

func newDevice(t testing.TB, b *bus.Bus, vehicle string) *device {
	t.Helper()
	d := &device{t: t, b: b, vehicle: vehicle}
	sub, err := b.Conn().Subscribe(bus.CommandSubject(vehicle), d.onCommand)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return d
}

func (d *device) onCommand(m *nats.Msg) {
	var c fleetv1.DeviceCommand
	if err := proto.Unmarshal(m.Data, &c); err != nil {
		d.t.Errorf("device got undecodable command: %v", err)
		return
	}
	d.mu.Lock()
	seen := slices.Contains(d.received, c.GetCommandId())
	speed := d.speedKmh
	statuses := []fleetv1.CommandReplyStatus{fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_ACCEPTED, fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_EXECUTED}
	detail := ""
	// A tracker checks its own speed before cutting the engine, as docs/protocol.md asks.
	tooFast := c.GetKind() == fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE && (c.MaxSpeedKmh == nil || speed > c.GetMaxSpeedKmh())
	if tooFast {
		statuses = []fleetv1.CommandReplyStatus{fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_REJECTED}
		detail = fmt.Sprintf("speed %.0f km/h above %v km/h", speed, c.MaxSpeedKmh)
	}
	if !seen {
		d.received = append(d.received, c.GetCommandId())
		d.kinds = append(d.kinds, c.GetKind())
		switch {
		case tooFast:
		case c.GetKind() == fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE:
			d.immobilized = true
		case c.GetKind() == fleetv1.CommandKind_COMMAND_KIND_RESUME:
			d.immobilized = false
		}
	}
	d.mu.Unlock()
	for _, st := range statuses {
		data, _ := proto.Marshal(&fleetv1.CommandReply{CommandId: c.GetCommandId(), VehicleId: d.vehicle, Status: st, Detail: detail,
			DeviceTime: timestamppb.Now(), SpeedKmh: &speed})
		if err := d.b.Conn().Publish(bus.UpSubject(d.vehicle, bus.KindReply), data); err != nil {
			d.t.Errorf("device reply: %v", err)
		}
	}
}

func (d *device) commands() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.received)
}

func (d *device) isImmobilized() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.immobilized
}

// send publishes one record (on the alarm subject when it carries alarms).
func (d *device) send(r telemetry.Record) {
	d.t.Helper()
	d.seq++
	r.VehicleID, r.Sequence = d.vehicle, d.seq
	data, err := wire.EncodeBatch(d.vehicle, time.Now(), []telemetry.Record{r})
	if err != nil {
		d.t.Fatal(err)
	}
	kind := bus.KindTelemetry
	if r.HasAlarm() {
		kind = bus.KindAlarm
	}
	if _, err := d.b.Publish(context.Background(), bus.UpSubject(d.vehicle, kind), data); err != nil {
		d.t.Fatal(err)
	}
}

// at builds a record at base+off, distM north of home, with ignition ign.
func at(base time.Time, off time.Duration, distM, speed float64, ign bool) telemetry.Record {
	p := geo.Destination(home, 0, distM)
	r := telemetry.Record{DeviceTime: base.Add(off), Lat: p.Lat, Lon: p.Lon, SpeedKmh: speed, FixValid: true, Satellites: 9}
	r.Ignition = ign
	r.Set(telemetry.HasIgnition)
	return r
}

func TestTowScenarioImmobilizeAndResume(t *testing.T) {
	forStores(t, testTowScenarioImmobilizeAndResume)
}

func testTowScenarioImmobilizeAndResume(t *testing.T, st Store) {
	h := newHarness(t, st)
	const v = "tow-1"
	dev := newDevice(t, h.b, v)
	base := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Millisecond)

	dev.send(at(base, 0, 0, 0, false))
	dev.send(at(base, 2*time.Minute, 5, 0, false))
	h.waitApplied(v, base.Add(2*time.Minute))
	if got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v}); len(got) != 0 {
		t.Fatalf("parked vehicle: got %d alerts, want none", len(got))
	}

	// The tow starts: the first record that satisfies the rule raises the alert.
	// One good fix 200 m away with the accelerometer sensing movement confirms it.
	first := at(base, 3*time.Minute, 200, 25, false)
	first.Movement = true
	first.Set(telemetry.HasMovement)
	dev.send(first)
	var tow *fleetv1.Alert
	eventually(t, "tow alert", func() bool {
		got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v, Kind: KindTow})
		if len(got) > 0 {
			tow = got[0]
		}
		return tow != nil
	})
	if !tow.GetFirstTime().AsTime().Equal(first.DeviceTime) {
		t.Fatalf("tow alert first time: got %s, want the first towing record's %s", tow.GetFirstTime().AsTime(), first.DeviceTime)
	}
	if tow.GetSeverity() != fleetv1.AlertSeverity_ALERT_SEVERITY_CRITICAL || tow.GetState() != fleetv1.AlertState_ALERT_STATE_OPEN {
		t.Fatalf("tow alert: got severity %v state %v", tow.GetSeverity(), tow.GetState())
	}

	// The tracker's own TOW alarm is the same incident: merged, not a second alert.
	alarm := at(base, 3*time.Minute+10*time.Second, 200, 30, false)
	alarm.Alarms = []telemetry.AlarmKind{telemetry.AlarmTow}
	dev.send(alarm)
	eventually(t, "device alarm merged", func() bool {
		got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v})
		return len(got) == 1 && got[0].GetOccurrences() == 2
	})
	if got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v})[0]; !slices.Equal(got.GetSources(), []string{SourceDispatch, SourceDevice}) {
		t.Fatalf("merged sources: got %v", got.GetSources())
	}

	// IMMOBILIZE while towed at speed: held, visibly.
	resp, err := h.cmds.SendCommand(h.ctx(), &fleetv1.SendCommandRequest{VehicleId: v, Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE, Who: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	imm := resp.GetCommand()
	if imm.GetState() != fleetv1.CommandState_COMMAND_STATE_QUEUED || !strings.Contains(imm.GetStateReason(), "waiting for speed <= 5 km/h") {
		t.Fatalf("immobilize at 30 km/h: got %v %q, want queued waiting for speed", imm.GetState(), imm.GetStateReason())
	}
	fast := at(base, 3*time.Minute+20*time.Second, 400, 40, false)
	dev.send(fast)
	eventually(t, "the held command to show the new speed", func() bool {
		r, err := h.cmds.GetCommand(h.ctx(), &fleetv1.GetCommandRequest{CommandId: imm.GetCommandId()})
		if err != nil {
			t.Fatal(err)
		}
		c := r.GetCommand()
		if c.GetState() != fleetv1.CommandState_COMMAND_STATE_QUEUED {
			t.Fatalf("at 40 km/h: got %v %q, want held", c.GetState(), c.GetStateReason())
		}
		return strings.Contains(c.GetStateReason(), "now 40 km/h")
	})
	if got := dev.commands(); len(got) != 0 {
		t.Fatalf("at 40 km/h the device received %v, want nothing", got)
	}

	// The speed drops below the limit: one slow fix is not enough evidence...
	slow := at(base, 3*time.Minute+40*time.Second, 450, 3, false)
	dev.send(slow)
	// The vehicle's state is written before the command gate re-evaluates,
	// so wait for the gate's reason rather than for the record alone.
	eventually(t, "the held command to count one slow fix", func() bool {
		r, err := h.cmds.GetCommand(h.ctx(), &fleetv1.GetCommandRequest{CommandId: imm.GetCommandId()})
		if err != nil {
			t.Fatal(err)
		}
		c := r.GetCommand()
		if c.GetState() != fleetv1.CommandState_COMMAND_STATE_QUEUED {
			t.Fatalf("after one slow fix: got %v %q, want held for more slow fixes", c.GetState(), c.GetStateReason())
		}
		return strings.Contains(c.GetStateReason(), "(1 so far")
	})
	// ... three over 20 s are: sent, accepted, executed.
	dev.send(at(base, 3*time.Minute+50*time.Second, 455, 1, false))
	dev.send(at(base, 4*time.Minute, 455, 0, false))
	done := h.waitCommand(imm.GetCommandId(), fleetv1.CommandState_COMMAND_STATE_EXECUTED)
	var states []fleetv1.CommandState
	for _, s := range done.GetHistory() {
		states = append(states, s.GetState())
	}
	wantStates := []fleetv1.CommandState{fleetv1.CommandState_COMMAND_STATE_QUEUED, fleetv1.CommandState_COMMAND_STATE_SENT, fleetv1.CommandState_COMMAND_STATE_ACCEPTED, fleetv1.CommandState_COMMAND_STATE_EXECUTED}
	if !slices.Equal(states, wantStates) {
		t.Fatalf("immobilize history: got %v, want %v", states, wantStates)
	}
	if done.GetIssuedBy() != "ann" || done.GetSentTime() == nil {
		t.Fatalf("audit: got issued_by %q sent_time %v", done.GetIssuedBy(), done.GetSentTime())
	}
	if h := done.GetHistory(); !strings.Contains(h[len(h)-1].GetDetail(), "device speed 0 km/h") {
		t.Fatalf("executed detail: got %q, want the device's own speed", h[len(h)-1].GetDetail())
	}
	if !dev.isImmobilized() || !slices.Equal(dev.commands(), []string{imm.GetCommandId()}) {
		t.Fatalf("device: immobilized %v commands %v, want immobilized by %s once", dev.isImmobilized(), dev.commands(), imm.GetCommandId())
	}

	// RESUME restores it (the vehicle is online and stopped: sent at once).
	resp, err = h.cmds.SendCommand(h.ctx(), &fleetv1.SendCommandRequest{VehicleId: v, Kind: fleetv1.CommandKind_COMMAND_KIND_RESUME, Who: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	if s := resp.GetCommand().GetState(); s != fleetv1.CommandState_COMMAND_STATE_SENT && s != fleetv1.CommandState_COMMAND_STATE_ACCEPTED && s != fleetv1.CommandState_COMMAND_STATE_EXECUTED {
		t.Fatalf("resume to an online vehicle: got %v, want sent at once", s)
	}
	h.waitCommand(resp.GetCommand().GetCommandId(), fleetv1.CommandState_COMMAND_STATE_EXECUTED)
	if dev.isImmobilized() {
		t.Fatal("device still immobilized after RESUME executed")
	}
	if got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v}); len(got) != 1 {
		t.Fatalf("alerts for the whole tow: got %d, want 1", len(got))
	}
	list, err := h.cmds.ListCommands(h.ctx(), &fleetv1.ListCommandsRequest{VehicleId: v})
	if err != nil || len(list.GetCommands()) != 2 || list.GetCommands()[0].GetKind() != fleetv1.CommandKind_COMMAND_KIND_RESUME {
		t.Fatalf("ListCommands: got %v, %v; want resume then immobilize", list.GetCommands(), err)
	}
}

func TestOfflineQueueAndExpiry(t *testing.T) { forStores(t, testOfflineQueueAndExpiry) }

func testOfflineQueueAndExpiry(t *testing.T, st Store) {
	h := newHarness(t, st)
	const v = "off-1"
	h.register(v) // registered, never reported
	dev := newDevice(t, h.b, v)
	send := func(kind fleetv1.CommandKind, params map[string]string, ttl time.Duration) *fleetv1.Command {
		t.Helper()
		resp, err := h.cmds.SendCommand(h.ctx(), &fleetv1.SendCommandRequest{VehicleId: v, Kind: kind, Params: params, Who: "bob", Ttl: durationpb.New(ttl)})
		if err != nil {
			t.Fatal(err)
		}
		c := resp.GetCommand()
		if c.GetState() != fleetv1.CommandState_COMMAND_STATE_QUEUED || !strings.Contains(c.GetStateReason(), "offline") {
			t.Fatalf("command to an offline vehicle: got %v %q, want queued offline", c.GetState(), c.GetStateReason())
		}
		return c
	}
	keep := send(fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW, nil, time.Hour)
	short := send(fleetv1.CommandKind_COMMAND_KIND_SET_REPORT_INTERVAL, map[string]string{"moving_s": "10"}, 3*time.Second)
	exp := h.waitCommand(short.GetCommandId(), fleetv1.CommandState_COMMAND_STATE_EXPIRED)
	if !strings.Contains(exp.GetStateReason(), "expired") {
		t.Fatalf("expired reason: got %q", exp.GetStateReason())
	}

	// The vehicle reconnects: the waiting command is delivered, the expired one never.
	now := time.Now().UTC()
	dev.send(at(now, 0, 0, 0, true))
	h.waitCommand(keep.GetCommandId(), fleetv1.CommandState_COMMAND_STATE_EXECUTED)
	dev.send(at(now, time.Second, 0, 0, true))
	h.waitApplied(v, now.Add(time.Second))
	if got := dev.commands(); !slices.Equal(got, []string{keep.GetCommandId()}) {
		t.Fatalf("device received %v, want only %s", got, keep.GetCommandId())
	}
	h.waitCommand(short.GetCommandId(), fleetv1.CommandState_COMMAND_STATE_EXPIRED)

	// Bad requests get a clear answer.
	for _, req := range []*fleetv1.SendCommandRequest{
		{VehicleId: v, Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE},                 // no who
		{VehicleId: "a.b", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE, Who: "bob"}, // subject injection
		{VehicleId: v, Kind: fleetv1.CommandKind_COMMAND_KIND_UNSPECIFIED, Who: "bob"},
		{VehicleId: v, Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW, Who: "bob", Ttl: durationpb.New(30 * 24 * time.Hour)},
	} {
		if _, err := h.cmds.SendCommand(h.ctx(), req); err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
			t.Errorf("SendCommand(%v): got %v, want InvalidArgument", req, err)
		}
	}
}

func TestAlarmWithInvalidFixRaisesAlert(t *testing.T) {
	h := newHarness(t, NewMemoryStore())
	const v = "nofix-1"
	dev := newDevice(t, h.b, v)
	r := telemetry.Record{DeviceTime: time.Now().UTC(), Lat: math.NaN(), Lon: math.NaN(), FixValid: false,
		Alarms: []telemetry.AlarmKind{telemetry.AlarmPowerCut}}
	dev.send(r)
	var got []*fleetv1.Alert
	eventually(t, "power_cut alert", func() bool {
		got = h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v})
		return len(got) > 0
	})
	if len(got) != 1 || got[0].GetKind() != "power_cut" || got[0].GetPosition() != nil || got[0].GetSeverity() != fleetv1.AlertSeverity_ALERT_SEVERITY_CRITICAL {
		t.Fatalf("got %v, want one critical power_cut alert without a position", got)
	}
	// The alert is also published as an event for integrations.
	eventually(t, "alert event", func() bool {
		s, err := h.b.Stream(context.Background(), bus.EventStream)
		if err != nil {
			return false
		}
		_, err = s.GetLastMsgForSubject(context.Background(), bus.EventFilter(SourceDispatch, "alert", v))
		return err == nil
	})
}

func publishEvent(t *testing.T, b *bus.Bus, source, kind, vehicle, id string, attrs map[string]string) {
	t.Helper()
	data, err := proto.Marshal(&fleetv1.Event{EventId: id, Source: source, Kind: kind, VehicleId: vehicle, Time: timestamppb.Now(), Attributes: attrs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(context.Background(), bus.EventSubject(source, kind, vehicle, id), data, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

func TestWatchAlertsResume(t *testing.T) { forStores(t, testWatchAlertsResume) }

func testWatchAlertsResume(t *testing.T, st Store) {
	h := newHarness(t, st)
	enter := func(id string) {
		// A zone that asks for enter alerts; one zone per event, so each is its own alert.
		publishEvent(t, h.b, "geofence", "enter", "w-1", id, map[string]string{"zone_id": "depot-" + id, "alert": "true"})
	}
	recv := func(stream grpc.ServerStreamingClient[fleetv1.WatchAlertsResponse], n int) []uint64 {
		t.Helper()
		var ids []uint64
		for len(ids) < n {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("Recv after %v: %v", ids, err)
			}
			ids = append(ids, m.GetAlert().GetAlertId())
		}
		return ids
	}

	ctx1, cancel1 := context.WithCancel(h.ctx())
	zero := uint64(0)
	s1, err := h.alerts.WatchAlerts(ctx1, &fleetv1.WatchAlertsRequest{AfterAlertId: &zero})
	if err != nil {
		t.Fatal(err)
	}
	enter("e1")
	if got := recv(s1, 1); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("first watch: got %v, want [1]", got)
	}
	cancel1() // the client goes away

	enter("e2")
	enter("e3")
	enter("e2") // a repeated event is not a new alert
	eventually(t, "alerts 2 and 3 stored", func() bool {
		n, _ := h.st.LastAlertID(context.Background())
		return n == 3
	})

	last := uint64(1)
	s2, err := h.alerts.WatchAlerts(h.ctx(), &fleetv1.WatchAlertsRequest{AfterAlertId: &last})
	if err != nil {
		t.Fatal(err)
	}
	if got := recv(s2, 2); !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("resumed after 1: got %v, want exactly the missed [2 3]", got)
	}
	// A watch without a resume point sees only what comes next.
	s3, err := h.alerts.WatchAlerts(h.ctx(), &fleetv1.WatchAlertsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3.Header(); err != nil { // the server has fixed its starting point
		t.Fatal(err)
	}
	enter("e4")
	if got := recv(s2, 1); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("live after resume: got %v, want [4]", got)
	}
	if got := recv(s3, 1); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("live-only watch: got %v, want [4]", got)
	}

	// Acknowledge and resolve through the API.
	ack, err := h.alerts.AcknowledgeAlert(h.ctx(), &fleetv1.AcknowledgeAlertRequest{AlertId: 2, Who: "ann", Note: "on it"})
	if err != nil || ack.GetAlert().GetState() != fleetv1.AlertState_ALERT_STATE_ACKNOWLEDGED || ack.GetAlert().GetAcknowledgedBy() != "ann" {
		t.Fatalf("acknowledge: got %v, %v", ack, err)
	}
	res, err := h.alerts.ResolveAlert(h.ctx(), &fleetv1.ResolveAlertRequest{AlertId: 2, Who: "bob", Note: "left the depot"})
	if err != nil || res.GetAlert().GetState() != fleetv1.AlertState_ALERT_STATE_RESOLVED || res.GetAlert().GetResolveNote() != "left the depot" {
		t.Fatalf("resolve: got %v, %v", res, err)
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{func() error {
			_, err := h.alerts.AcknowledgeAlert(h.ctx(), &fleetv1.AcknowledgeAlertRequest{AlertId: 2, Who: "ann"})
			return err
		}(), "FailedPrecondition"},
		{func() error {
			_, err := h.alerts.ResolveAlert(h.ctx(), &fleetv1.ResolveAlertRequest{AlertId: 99, Who: "ann"})
			return err
		}(), "NotFound"},
		{func() error {
			_, err := h.alerts.ResolveAlert(h.ctx(), &fleetv1.ResolveAlertRequest{AlertId: 3})
			return err
		}(), "InvalidArgument"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("got %v, want %s", tc.err, tc.want)
		}
	}
	page := h.listAlerts(&fleetv1.ListAlertsRequest{State: fleetv1.AlertState_ALERT_STATE_RESOLVED})
	if len(page) != 1 || page[0].GetAlertId() != 2 {
		t.Fatalf("resolved alerts: got %v, want [2]", page)
	}
}

func TestFeedMergesServiceEvents(t *testing.T) {
	h := newHarness(t, NewMemoryStore())
	publishEvent(t, h.b, "tracking", "status_changed", "f-1", "s1", map[string]string{"status": "offline", "previous": "stopped"})
	publishEvent(t, h.b, "geofence", "exit", "f-1", "g1", map[string]string{"zone_id": "yard", "zone_name": "Yard", "must_stay_inside": "true"})
	publishEvent(t, h.b, "maintenance", "fuel_drain", "f-1", "m1", map[string]string{"litres": "42"})
	publishEvent(t, h.b, "maintenance", "unknown_kind", "f-1", "m2", nil)
	eventually(t, "three alerts", func() bool { n, _ := h.st.LastAlertID(context.Background()); return n == 3 })
	got := h.listAlerts(&fleetv1.ListAlertsRequest{OldestFirst: true})
	var ks []string
	for _, a := range got {
		ks = append(ks, a.GetKind())
	}
	if !slices.Equal(ks, []string{KindOffline, KindZoneExit, KindFuelTheft}) {
		t.Fatalf("got kinds %v", ks)
	}
	crit := h.listAlerts(&fleetv1.ListAlertsRequest{MinSeverity: fleetv1.AlertSeverity_ALERT_SEVERITY_CRITICAL})
	if len(crit) != 2 {
		t.Fatalf("critical alerts: got %d, want 2 (zone exit, fuel theft)", len(crit))
	}
	// Back online resolves the offline alert by itself.
	publishEvent(t, h.b, "tracking", "status_changed", "f-1", "s2", map[string]string{"status": "moving", "previous": "offline"})
	eventually(t, "offline alert resolved", func() bool {
		a, err := h.st.GetAlert(context.Background(), 1)
		return err == nil && a.State == AlertResolved && a.ResolvedBy == "system"
	})
}

// TestEveryFuelEventIsItsOwnAlert: the maintenance service's fuel events, as the fuel
// report lists them (maintenance's TestFuelReportAgreesWithAlerts checks the report
// against the bus), become one alert each, whatever their timing: several drains of one
// vehicle minutes apart are several fuel-theft alerts, each caused by its own event,
// never occurrences of one incident; below the threshold a drain is a warning and a
// refuel says it is unconfirmed.
func TestEveryFuelEventIsItsOwnAlert(t *testing.T) {
	h := newHarness(t, NewMemoryStore())
	events := []struct {
		id, kind, litres, conf string
		alert                  string
		severity               Severity
		unconfirmed            bool
	}{
		{"d1", "fuel_drain", "21.4", "0.90", KindFuelTheft, SeverityCritical, false},
		{"d2", "fuel_drain", "35.0", "0.90", KindFuelTheft, SeverityCritical, false},
		{"d3", "fuel_drain", "12.2", "0.35", KindFuelTheft, SeverityWarning, true},
		{"r1", "refuel", "48.0", "0.90", KindRefuel, SeverityInfo, false},
		{"r2", "refuel", "15.5", "0.40", KindRefuel, SeverityInfo, true},
		{"d4", "fuel_drain", "18.0", "0.62", KindFuelTheft, SeverityCritical, false},
	}
	for _, e := range events {
		publishEvent(t, h.b, "maintenance", e.kind, "fuel-1", e.id, map[string]string{"litres": e.litres, "confidence": e.conf})
	}
	eventually(t, "one alert per fuel event", func() bool {
		n, _ := h.st.LastAlertID(context.Background())
		return n == uint64(len(events))
	})
	byCause := map[string]Alert{}
	for id := uint64(1); id <= uint64(len(events)); id++ {
		a, err := h.st.GetAlert(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := byCause[a.CauseID]; dup {
			t.Fatalf("two alerts caused by %s", a.CauseID)
		}
		byCause[a.CauseID] = a
	}
	for _, e := range events {
		a, ok := byCause["evt:"+e.id]
		if !ok {
			t.Errorf("event %s: no alert", e.id)
			continue
		}
		if a.Kind != e.alert || a.Severity != e.severity || a.Occurrences != 1 ||
			strings.Contains(a.Message, "unconfirmed") != e.unconfirmed || !strings.Contains(a.Message, e.litres+" l") {
			t.Errorf("event %s: got %s severity %v, %d occurrences, %q; want %s severity %v, one occurrence, unconfirmed=%v, %s l",
				e.id, a.Kind, a.Severity, a.Occurrences, a.Message, e.alert, e.severity, e.unconfirmed, e.litres)
		}
	}
}

// forStores runs a scenario on the memory store and on Redis.
func forStores(t *testing.T, run func(t *testing.T, st Store)) {
	t.Run("memory", func(t *testing.T) { run(t, NewMemoryStore()) })
	t.Run("redis", func(t *testing.T) {
		c := redistest.Client(t)
		run(t, NewRedisStore(c, redistest.Prefix(t, c)))
	})
}

func TestRestartMidIncidentNoDuplicate(t *testing.T) {
	forStores(t, func(t *testing.T, st Store) {
		h := newHarness(t, st)
		const v = "rs-1"
		dev := newDevice(t, h.b, v)
		base := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Millisecond)
		dev.send(at(base, 0, 0, 0, false))
		towed := at(base, 2*time.Minute, 300, 20, false) // one fix away plus the accelerometer
		towed.Movement = true
		towed.Set(telemetry.HasMovement)
		dev.send(towed)
		eventually(t, "tow alert", func() bool {
			return len(h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v})) == 1
		})
		// Restart once the incident's state is stored. (A crash between the alert and
		// the state write is covered by the store: the redelivered records raise the
		// same cause, and any later occurrence merges into the open incident.)
		h.waitApplied(v, base.Add(2*time.Minute))
		h.restart()
		// A stopped consumer's last pull request stays open at the server for up to the
		// bus's fetch wait (2 s); a record delivered into it waits for AckWait (30 s)
		// before redelivery. Publishing after it lapsed keeps the test about dispatch.
		time.Sleep(2500 * time.Millisecond)
		for i := range 5 {
			dev.send(at(base, 3*time.Minute+time.Duration(i)*10*time.Second, 400+float64(i)*100, 30, false))
		}
		last := base.Add(3*time.Minute + 40*time.Second)
		h.waitApplied(v, last)
		got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v})
		if len(got) != 1 || got[0].GetOccurrences() != 1 {
			t.Fatalf("after restart mid-tow: got %d alerts (first with %d occurrences), want 1 alert raised once", len(got), got[0].GetOccurrences())
		}
		// A redelivered batch (same records again) changes nothing either.
		dev.seq -= 5
		for i := range 5 {
			dev.send(at(base, 3*time.Minute+time.Duration(i)*10*time.Second, 400+float64(i)*100, 30, false))
		}
		dev.send(at(base, 4*time.Minute, 1000, 30, false))
		h.waitApplied(v, base.Add(4*time.Minute))
		if got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v}); len(got) != 1 || got[0].GetOccurrences() != 1 {
			t.Fatalf("after repeats: got %v, want 1 alert raised once", got)
		}
	})
}

// TestRebuildFromStream is the all-in-one's restart: a memory store is lost with the
// process, and the new one rebuilds from the retained streams. The tow incident comes
// back as one alert, and commands are not delivered again from replayed records.
func TestRebuildFromStream(t *testing.T) {
	cfg := testConfig()
	cfg.Rebuild = true
	h := newHarnessWith(t, NewMemoryStore(), cfg)
	const v = "rb-1"
	dev := newDevice(t, h.b, v)
	base := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Millisecond)
	dev.send(at(base, 0, 0, 0, false))
	dev.send(at(base, 2*time.Minute, 300, 20, false))
	dev.send(at(base, 2*time.Minute+10*time.Second, 500, 3, false))
	h.waitApplied(v, base.Add(2*time.Minute+10*time.Second))
	resp, err := h.cmds.SendCommand(h.ctx(), &fleetv1.SendCommandRequest{VehicleId: v, Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW, Who: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	h.waitCommand(resp.GetCommand().GetCommandId(), fleetv1.CommandState_COMMAND_STATE_EXECUTED)

	h.shutdown()
	h.st = NewMemoryStore() // the process and its memory are gone
	h.start()
	last := at(base, 3*time.Minute, 900, 30, false)
	dev.send(last)
	h.waitApplied(v, last.DeviceTime)
	got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v})
	if len(got) != 1 || got[0].GetKind() != KindTow || got[0].GetOccurrences() != 1 {
		t.Fatalf("after rebuild: got %v, want the one tow alert, raised once", got)
	}
	if n := len(dev.commands()); n != 1 {
		t.Fatalf("device received %d commands, want 1 (none again from the replay)", n)
	}
}

// TestTwoInstancesShareRedis: two instances split the partitions and share one Redis. A
// dispatcher connected to either sees every alert, and a command issued through one
// instance is delivered by the one that owns the vehicle's partition.
func TestTwoInstancesShareRedis(t *testing.T) {
	c := redistest.Client(t)
	prefix := redistest.Prefix(t, c)
	cfg := testConfig()
	cfg.Partitions = []int{0, 1, 2, 3, 4, 5, 6, 7}
	a := newHarnessWith(t, NewRedisStore(c, prefix), cfg)
	b := &harness{t: t, b: a.b, st: NewRedisStore(c, prefix), cfg: testConfig(), groups: a.groups}
	b.cfg.Partitions = []int{8, 9, 10, 11, 12, 13, 14, 15}
	b.start()
	t.Cleanup(b.shutdown)

	stream, err := b.alerts.WatchAlerts(b.ctx(), &fleetv1.WatchAlertsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	const n = 12
	devs := make([]*device, n)
	now := time.Now().UTC()
	for i := range devs {
		devs[i] = newDevice(t, a.b, "two-"+strings.Repeat("x", i))
	}
	// Commands issued through b, to registered vehicles not yet seen: queued in the
	// shared store.
	cmdIDs := make([]string, n)
	for _, d := range devs {
		b.register(d.vehicle)
	}
	for i, d := range devs {
		resp, err := b.cmds.SendCommand(b.ctx(), &fleetv1.SendCommandRequest{VehicleId: d.vehicle, Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW, Who: "ann"})
		if err != nil {
			t.Fatal(err)
		}
		cmdIDs[i] = resp.GetCommand().GetCommandId()
	}
	for _, d := range devs {
		r := at(now, 0, 0, 0, true)
		r.Alarms = []telemetry.AlarmKind{telemetry.AlarmPanic}
		d.send(r)
	}
	seen := map[string]bool{}
	for len(seen) < n {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d of %d alerts: %v", len(seen), n, err)
		}
		seen[m.GetAlert().GetVehicleId()] = true
	}
	for i, id := range cmdIDs {
		b.waitCommand(id, fleetv1.CommandState_COMMAND_STATE_EXECUTED)
		if got := devs[i].commands(); !slices.Equal(got, []string{id}) {
			t.Fatalf("%s received %v, want [%s] once", devs[i].vehicle, got, id)
		}
	}
}

// TestJammerThatStaysOn: the tracker loses GNSS while moving and then sends nothing (the
// jammer blocks its uplink too). The sweep's silence rule alerts without any further
// record; the buffered records that arrive later join the same alert.
func TestJammerThatStaysOn(t *testing.T) { forStores(t, testJammerThatStaysOn) }

func testJammerThatStaysOn(t *testing.T, st Store) {
	cfg := testConfig()
	cfg.Detect.JamSilentAfter = 2 * time.Second
	h := newHarnessWith(t, st, cfg)
	const v = "jam-1"
	dev := newDevice(t, h.b, v)
	base := time.Now().Add(-30 * time.Second).UTC().Truncate(time.Millisecond)
	drive := func(off time.Duration, dist float64, fix bool, level uint8) telemetry.Record {
		r := at(base, off, dist, 60, true)
		r.FixValid = fix
		r.Movement, r.GSMLevel = true, level
		r.Set(telemetry.HasMovement | telemetry.HasGSMLevel)
		return r
	}
	dev.send(drive(0, 0, true, 4))
	dev.send(drive(10*time.Second, 170, true, 4))
	lost := drive(20*time.Second, 0, false, 3)
	dev.send(lost)
	var jam *fleetv1.Alert
	eventually(t, "jamming alert from the silence", func() bool {
		got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v, Kind: KindGNSSJamming})
		if len(got) > 0 {
			jam = got[0]
		}
		return jam != nil
	})
	kinds := map[string]bool{}
	for _, e := range jam.GetEvidence() {
		kinds[e.GetKind()] = true
	}
	if !kinds[EvSilence] || !kinds[EvGNSSLoss] || jam.GetConfidence() == fleetv1.AlertConfidence_ALERT_CONFIDENCE_UNSPECIFIED || jam.GetPosition() == nil {
		t.Fatalf("got evidence %v confidence %v position %v, want silence and GNSS loss, a confidence and the last position",
			jam.GetEvidence(), jam.GetConfidence(), jam.GetPosition())
	}
	// The operator resolves it; then the jammer goes off and the buffer arrives.
	if _, err := h.alerts.ResolveAlert(h.ctx(), &fleetv1.ResolveAlertRequest{AlertId: jam.GetAlertId(), Who: "ann"}); err != nil {
		t.Fatal(err)
	}
	dev.send(drive(30*time.Second, 0, false, 1))
	last := drive(40*time.Second, 0, false, 1)
	dev.send(last)
	h.waitApplied(v, last.DeviceTime)
	eventually(t, "the buffered records to join the alert", func() bool {
		got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v})
		return len(got) == 1 && got[0].GetOccurrences() >= 2
	})
}

// TestForgedSlowFixDoesNotReleaseImmobilize: while the vehicle drives at 26 km/h, one
// forged (or glitched) speed-0 fix does not release a held IMMOBILIZE; several forged
// fixes get it sent, and the tracker, checking its own speed, refuses it.
func TestForgedSlowFixDoesNotReleaseImmobilize(t *testing.T) {
	forStores(t, testForgedSlowFixDoesNotReleaseImmobilize)
}

func testForgedSlowFixDoesNotReleaseImmobilize(t *testing.T, st Store) {
	h := newHarness(t, st)
	const v = "forge-1"
	dev := newDevice(t, h.b, v)
	dev.setSpeed(26)
	base := time.Now().Add(-5 * time.Minute).UTC().Truncate(time.Millisecond)
	for i := range 3 {
		dev.send(at(base, time.Duration(i)*10*time.Second, float64(i)*72, 26, true))
	}
	h.waitApplied(v, base.Add(20*time.Second)) // known to dispatch once it reported
	resp, err := h.cmds.SendCommand(h.ctx(), &fleetv1.SendCommandRequest{VehicleId: v, Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE, Who: "sup"})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCommand().GetCommandId()
	state := func() *fleetv1.Command {
		t.Helper()
		r, err := h.cmds.GetCommand(h.ctx(), &fleetv1.GetCommandRequest{CommandId: id})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetCommand()
	}
	forged := at(base, 25*time.Second, 180, 0, true)
	forged.HDOP = 0.8
	// The gate re-judges held commands after the vehicle's state is stored, so wait for
	// the reason that judges this fix rather than for the stored state alone.
	dev.send(forged)
	h.waitApplied(v, forged.DeviceTime)
	waitReason := func(want string) {
		t.Helper()
		eventually(t, "command reason "+want, func() bool {
			c := state()
			return c.GetState() != fleetv1.CommandState_COMMAND_STATE_QUEUED || strings.Contains(c.GetStateReason(), want)
		})
	}
	waitReason("(1 so far")
	if c := state(); c.GetState() != fleetv1.CommandState_COMMAND_STATE_QUEUED || len(dev.commands()) != 0 {
		t.Fatalf("after one forged speed-0 fix: got %v %q, device received %v; want held, nothing sent", c.GetState(), c.GetStateReason(), dev.commands())
	}
	dev.send(at(base, 30*time.Second, 216, 26, true))
	h.waitApplied(v, base.Add(30*time.Second))
	waitReason("now 26 km/h")
	if c := state(); c.GetState() != fleetv1.CommandState_COMMAND_STATE_QUEUED || !strings.Contains(c.GetStateReason(), "now 26 km/h") {
		t.Fatalf("driving on: got %v %q, want held at 26 km/h", c.GetState(), c.GetStateReason())
	}
	// An attacker able to forge a whole run of slow fixes gets the command sent; the
	// tracker's own check stops the engine cut.
	for i := range 3 {
		dev.send(at(base, 40*time.Second+time.Duration(i)*10*time.Second, 216, 0, true))
	}
	c := h.waitCommand(id, fleetv1.CommandState_COMMAND_STATE_REJECTED)
	if dev.isImmobilized() || !strings.Contains(c.GetStateReason(), "device speed 26 km/h") {
		t.Fatalf("got immobilized %v, reason %q; want refused by the device at 26 km/h", dev.isImmobilized(), c.GetStateReason())
	}
}

// TestCommandRules: a command to a vehicle that never reported and is not registered is
// NotFound; a queued command can be cancelled (recorded with who and why) and is then
// never delivered; what left the queue cannot be cancelled.
func TestCommandRules(t *testing.T) { forStores(t, testCommandRules) }

func testCommandRules(t *testing.T, st Store) {
	h := newHarness(t, st)
	const v = "rule-1"
	locate := &fleetv1.SendCommandRequest{VehicleId: v, Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW, Who: "ann"}
	if _, err := h.cmds.SendCommand(h.ctx(), locate); status.Code(err) != codes.NotFound {
		t.Fatalf("command to an unknown vehicle: got %v, want NotFound", err)
	}
	if resp, err := h.cmds.ListCommands(h.ctx(), &fleetv1.ListCommandsRequest{VehicleId: v}); err != nil || len(resp.GetCommands()) != 0 {
		t.Fatalf("commands after the refusal: %v, %v; want none", resp.GetCommands(), err)
	}
	h.register(v)
	dev := newDevice(t, h.b, v)
	resp, err := h.cmds.SendCommand(h.ctx(), locate)
	if err != nil {
		t.Fatalf("command to a registered vehicle: %v", err)
	}
	queued := resp.GetCommand()
	if queued.GetState() != fleetv1.CommandState_COMMAND_STATE_QUEUED {
		t.Fatalf("got %v, want queued (never reported)", queued.GetState())
	}
	for _, tc := range []struct {
		name string
		req  *fleetv1.CancelCommandRequest
		want codes.Code
	}{
		{"no who", &fleetv1.CancelCommandRequest{CommandId: queued.GetCommandId()}, codes.InvalidArgument},
		{"no id", &fleetv1.CancelCommandRequest{Who: "ann"}, codes.InvalidArgument},
		{"unknown id", &fleetv1.CancelCommandRequest{CommandId: "c999", Who: "ann"}, codes.NotFound},
	} {
		if _, err := h.cmds.CancelCommand(h.ctx(), tc.req); status.Code(err) != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	got, err := h.cmds.CancelCommand(h.ctx(), &fleetv1.CancelCommandRequest{CommandId: queued.GetCommandId(), Who: "bob", Note: "wrong vehicle"})
	if err != nil {
		t.Fatal(err)
	}
	c := got.GetCommand()
	last := c.GetHistory()[len(c.GetHistory())-1]
	if c.GetState() != fleetv1.CommandState_COMMAND_STATE_CANCELLED || last.GetState() != fleetv1.CommandState_COMMAND_STATE_CANCELLED ||
		last.GetDetail() != "cancelled by bob: wrong vehicle" {
		t.Fatalf("cancelled command: got %v with last step %v, want cancelled by bob: wrong vehicle", c.GetState(), last)
	}
	if _, err := h.cmds.CancelCommand(h.ctx(), &fleetv1.CancelCommandRequest{CommandId: c.GetCommandId(), Who: "bob"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second cancel: got %v, want FailedPrecondition", err)
	}
	// The vehicle reports: a new command goes out, the cancelled one never does.
	now := time.Now().UTC()
	dev.send(at(now, 0, 0, 0, true))
	h.waitApplied(v, now)
	sent, err := h.cmds.SendCommand(h.ctx(), locate)
	if err != nil {
		t.Fatal(err)
	}
	h.waitCommand(sent.GetCommand().GetCommandId(), fleetv1.CommandState_COMMAND_STATE_EXECUTED)
	if got := dev.commands(); !slices.Equal(got, []string{sent.GetCommand().GetCommandId()}) {
		t.Fatalf("device received %v, want only %s", got, sent.GetCommand().GetCommandId())
	}
	if _, err := h.cmds.CancelCommand(h.ctx(), &fleetv1.CancelCommandRequest{CommandId: sent.GetCommand().GetCommandId(), Who: "bob"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("cancel of an executed command: got %v, want FailedPrecondition", err)
	}
	// A vehicle known only from its reports (never registered) takes commands too.
	const seen = "rule-2"
	dev2 := newDevice(t, h.b, seen)
	dev2.send(at(now, 0, 0, 0, true))
	h.waitApplied(seen, now)
	if _, err := h.cmds.SendCommand(h.ctx(), &fleetv1.SendCommandRequest{VehicleId: seen, Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW, Who: "ann"}); err != nil {
		t.Fatalf("command to a vehicle that reported: %v", err)
	}
}
