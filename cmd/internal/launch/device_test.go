package launch

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

// protoDevice is a tracker speaking the tracker protocol's payloads over some transport
// (CoAP, MQTT): how it reports a fix, receives commands and sends a reply.
type protoDevice struct {
	report   func(seq int, at time.Time, lat, lon, speed float64)
	commands <-chan *fleetv1.DeviceCommand
	reply    func(data []byte)
}

// driveDevice plays the end-to-end story every device protocol must pass through the
// running platform p: the device drives into a depot zone and stops; its fixes reach
// tracking, an enter event fires, an IMMOBILIZE reaches the device, and its replies
// complete the command.
func driveDevice(t *testing.T, ctx context.Context, p *Platform, vehicle string, d protoDevice) {
	t.Helper()
	conn := dial(t, p)
	depotLat, depotLon := 52.5200, 13.4050
	zone := "depot-" + vehicle
	if _, err := fleetv1.NewGeofenceServiceClient(conn).CreateZone(ctx, &fleetv1.CreateZoneRequest{Zone: &fleetv1.Zone{
		ZoneId: zone, Name: zone, RadiusM: 300,
		Geojson: fmt.Sprintf(`{"type":"Point","coordinates":[%f,%f]}`, depotLon, depotLat),
		Alert:   fleetv1.ZoneAlert_ZONE_ALERT_ENTER_EXIT,
	}}); err != nil {
		t.Fatalf("create zone: %v", err)
	}
	start := time.Now().Add(-2 * time.Minute).Truncate(time.Second)
	path := []struct{ dLat, speed float64 }{{0.0090, 30}, {0.0080, 30}, {0.0010, 20}, {0.0002, 5}, {0, 0}, {0, 0}}
	for i, pt := range path {
		d.report(i+1, start.Add(time.Duration(i)*10*time.Second), depotLat+pt.dLat, depotLon, pt.speed)
	}
	tracking := fleetv1.NewTrackingServiceClient(conn)
	waitUntil(t, ctx, "the device's last fix in tracking", func() (bool, string) {
		resp, err := tracking.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: vehicle})
		if err != nil {
			return false, err.Error()
		}
		pos := resp.GetVehicle().GetState().GetLastFix().GetPosition()
		return pos != nil && math.Abs(pos.GetLatitude()-depotLat) < 1e-6, fmt.Sprintf("last fix %v", pos)
	})
	waitUntil(t, ctx, "an enter event for the depot", func() (bool, string) {
		resp, err := fleetv1.NewGeofenceServiceClient(conn).ListZoneEvents(ctx, &fleetv1.ListZoneEventsRequest{ZoneId: zone, VehicleId: vehicle})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range resp.GetEvents() {
			if e.GetKind() == "enter" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events, no enter", len(resp.GetEvents()))
	})

	cmds := fleetv1.NewCommandServiceClient(conn)
	sent, err := cmds.SendCommand(ctx, &fleetv1.SendCommandRequest{VehicleId: vehicle, Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE, Who: "test"})
	if err != nil {
		t.Fatalf("send command: %v", err)
	}
	id := sent.GetCommand().GetCommandId()
	// The device keeps reporting (parked) until the command arrives, as a tracker would.
	var got *fleetv1.DeviceCommand
	for i := len(path); got == nil || got.GetCommandId() != id; i++ {
		select {
		case got = <-d.commands:
		case <-time.After(2 * time.Second):
			d.report(i+1, start.Add(time.Duration(i)*10*time.Second), depotLat, depotLon, 0)
		case <-ctx.Done():
			t.Fatal("no command reached the device")
		}
	}
	if got.GetKind() != fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE {
		t.Fatalf("device got %v, want IMMOBILIZE", got)
	}
	for _, st := range []fleetv1.CommandReplyStatus{fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_ACCEPTED, fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_EXECUTED} {
		data, _ := proto.Marshal(&fleetv1.CommandReply{CommandId: id, VehicleId: vehicle, Status: st, DeviceTime: timestamppb.Now(), SpeedKmh: proto.Float64(0)})
		d.reply(data)
	}
	waitUntil(t, ctx, "the command executed", func() (bool, string) {
		resp, err := cmds.GetCommand(ctx, &fleetv1.GetCommandRequest{CommandId: id})
		if err != nil {
			return false, err.Error()
		}
		c := resp.GetCommand()
		return c.GetState() == fleetv1.CommandState_COMMAND_STATE_EXECUTED, fmt.Sprintf("state %v (%s)", c.GetState(), c.GetStateReason())
	})
}

// fixBatch is one fix as a protobuf TelemetryBatch.
func fixBatch(vehicle string, seq int, at time.Time, lat, lon, speed float64) []byte {
	data, _ := proto.Marshal(&fleetv1.TelemetryBatch{VehicleId: vehicle, SentTime: timestamppb.Now(), Records: []*fleetv1.TelemetryRecord{{
		DeviceTime: timestamppb.New(at), Sequence: uint64(seq), Latitude: lat, Longitude: lon, SpeedKmh: speed,
		Satellites: 10, Hdop: 0.8, FixValid: true, Ignition: proto.Bool(true),
	}}})
	return data
}

// Simulated fleets reporting over MQTT and over CoAP (fleetsim --protocol mqtt|coap),
// each vehicle logging in with its own registered secret, reach tracking like one on NATS.
func TestSimulatedDeviceFleets(t *testing.T) {
	const vehicles = 4
	p := startPlatform(t, Options{RedisURL: "memory",
		NATS:     bus.Config{URL: bus.Embedded, ListenPort: -1, MQTT: bus.MQTTConfig{Port: -1}},
		Services: append(append([]string(nil), AllServices...), CoAP),
		CoAP:     CoAPOptions{Addr: "127.0.0.1:0"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	devices, err := natsauth.OpenDevices(ctx, p.Bus, 1, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	tracking := fleetv1.NewTrackingServiceClient(dial(t, p))
	for _, tc := range []struct{ protocol, addr string }{
		{fleetsim.ProtocolMQTT, p.MQTTAddr},
		{fleetsim.ProtocolCoAP, p.CoAPAddr},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			cfg := fleetsim.DefaultConfig()
			prefix := tc.protocol + "-"
			cfg.Vehicles, cfg.Seed, cfg.Prefix = vehicles, 13, prefix
			cfg.Protocol, cfg.DeviceAddr = tc.protocol, tc.addr
			cfg.FixedInterval = 2 * time.Second
			cfg.DeviceSecrets = map[string]string{}
			sim, err := fleetsim.NewSim(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range sim.VehicleIDs() {
				_, secret, err := devices.Add(ctx, natsauth.Device{ID: id, Model: "fleetsim", Protocol: tc.protocol}, "test")
				if err != nil {
					t.Fatal(err)
				}
				cfg.DeviceSecrets[id] = secret
			}
			fleet, err := fleetsim.New(cfg, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			fctx, fcancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- fleet.Run(fctx, nil) }()
			defer func() { fcancel(); <-done }()
			waitUntil(t, ctx, "every simulated "+tc.protocol+" vehicle in tracking", func() (bool, string) {
				resp, err := tracking.ListVehicles(ctx, &fleetv1.ListVehiclesRequest{PageSize: 100})
				if err != nil {
					return false, err.Error()
				}
				n := 0
				for _, v := range resp.GetVehicles() {
					if strings.HasPrefix(v.GetVehicleId(), prefix) && v.GetState().GetLastFix() != nil {
						n++
					}
				}
				return n == vehicles, fmt.Sprintf("%d of %d vehicles with a fix (acked %d)", n, vehicles, fleet.Stats().Acked)
			})
		})
	}
}
