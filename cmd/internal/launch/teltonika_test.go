package launch

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetwire/fleetwire/edge/teltonika/codec"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

// teltonikaDevice is a Teltonika tracker over TCP: it sends Codec 8E frames and answers
// Codec 12 commands the way an FMB device does.
type teltonikaDevice struct {
	t        *testing.T
	c        net.Conn
	wmu      sync.Mutex
	acks     chan int
	commands chan string
}

func dialTeltonika(t *testing.T, addr, imei string) (*teltonikaDevice, byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(codec.AppendIMEI(nil, imei)); err != nil {
		t.Fatal(err)
	}
	var ans [1]byte
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, ans[:]); err != nil {
		t.Fatalf("handshake answer: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	d := &teltonikaDevice{t: t, c: c, acks: make(chan int, 100), commands: make(chan string, 10)}
	if ans[0] == codec.HandshakeAccept {
		go d.read()
	}
	return d, ans[0]
}

// read tells the server's two kinds of message apart: a record-count ack (never 0 over
// TCP) and a Codec 12 frame, whose zero preamble reads as a count of 0.
func (d *teltonikaDevice) read() {
	var b [8]byte
	for {
		if _, err := io.ReadFull(d.c, b[:4]); err != nil {
			return
		}
		if n := binary.BigEndian.Uint32(b[:4]); n != 0 {
			d.acks <- int(n)
			continue
		}
		if _, err := io.ReadFull(d.c, b[4:8]); err != nil {
			return
		}
		n, err := codec.BodyLen(b[:])
		if err != nil {
			return
		}
		rest := make([]byte, n+4)
		if _, err := io.ReadFull(d.c, rest); err != nil {
			return
		}
		m, err := codec.DecodeMessage(rest[:n])
		if err != nil || codec.CheckCRC(rest[:n], rest[n:]) != nil {
			return
		}
		d.commands <- string(m.Text)
	}
}

func (d *teltonikaDevice) send(b []byte) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if _, err := d.c.Write(b); err != nil {
		d.t.Errorf("device write: %v", err)
	}
}

// report sends one record at lat/lon and waits for its ack.
func (d *teltonikaDevice) report(at time.Time, lat, lon float64, speed uint16) {
	d.t.Helper()
	rec := codec.Record{
		TimestampMs: at.UnixMilli(), Lat: int32(math.Round(lat * 1e7)), Lon: int32(math.Round(lon * 1e7)),
		Altitude: 40, Angle: 90, Satellites: 10, Speed: speed,
		IO: []codec.IO{{ID: 239, Size: 1, Value: 1}, {ID: 240, Size: 1, Value: 1}, {ID: 21, Size: 1, Value: 4},
			{ID: 66, Size: 2, Value: 12600}, {ID: 16, Size: 4, Value: 1000}},
	}
	body, err := codec.AppendBody(nil, codec.Codec8E, []codec.Record{rec})
	if err != nil {
		d.t.Fatal(err)
	}
	d.send(codec.AppendFrame(nil, body))
	select {
	case n := <-d.acks:
		if n != 1 {
			d.t.Fatalf("ack: got %d records, want 1", n)
		}
	case <-time.After(30 * time.Second):
		d.t.Fatalf("no ack for the record at %v", at)
	}
}

// A Teltonika device reports through the all-in-one: its fixes reach tracking, a zone
// event fires, an IMMOBILIZE reaches it over Codec 12 and its answer completes the
// command. Unknown devices are refused on TCP and UDP.
func TestTeltonikaDeviceThroughThePlatform(t *testing.T) {
	const imei, vehicle = "356307042441013", "veh-tt-00001"
	p := startPlatform(t, Options{RedisURL: "memory",
		Services:  append(append([]string(nil), AllServices...), Teltonika),
		Teltonika: TeltonikaOptions{TCPAddr: "127.0.0.1:0", UDPAddr: "127.0.0.1:0", Devices: []string{imei + "=" + vehicle}},
	})
	if p.TeltonikaTCP == "" || p.TeltonikaUDP == "" {
		t.Fatalf("gateway addresses: got TCP %q UDP %q", p.TeltonikaTCP, p.TeltonikaUDP)
	}
	conn := dial(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	devices, err := natsauth.OpenDevices(ctx, p.Bus, 1, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	// The IMEI maps to the vehicle; the registry says whether the device may connect.
	t.Run("mapped IMEI of an unregistered device refused", func(t *testing.T) {
		_, ans := dialTeltonika(t, p.TeltonikaTCP, imei)
		if ans != codec.HandshakeRefuse {
			t.Errorf("got %#02x, want 00", ans)
		}
	})
	if _, _, err := devices.Add(ctx, natsauth.Device{ID: vehicle, Model: "fmb920", Protocol: "teltonika"}, "test"); err != nil {
		t.Fatal(err)
	}

	t.Run("unknown device refused over TCP", func(t *testing.T) {
		_, ans := dialTeltonika(t, p.TeltonikaTCP, "356307042441099")
		if ans != codec.HandshakeRefuse {
			t.Errorf("got %#02x, want 00", ans)
		}
	})
	t.Run("unknown device refused over UDP", func(t *testing.T) {
		c, err := net.Dial("udp", p.TeltonikaUDP)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		body, _ := codec.AppendBody(nil, codec.Codec8, []codec.Record{{TimestampMs: time.Now().UnixMilli()}})
		dg := codec.AppendUDP(nil, codec.UDPHeader{PacketID: 1, AVLPacketID: 2, IMEI: "356307042441099"}, body)
		buf := make([]byte, 16)
		for try := 0; ; try++ {
			_, _ = c.Write(dg)
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err := c.Read(buf)
			if err == nil {
				if got := hex.EncodeToString(buf[:n]); got != "00050001010200" {
					t.Errorf("got %s, want 00050001010200 (zero records accepted)", got)
				}
				break
			}
			if try == 10 {
				t.Fatalf("no answer: %v", err)
			}
		}
	})

	// A zone 300 m around the depot; the vehicle drives in from 1 km away.
	depotLat, depotLon := 52.5200, 13.4050
	if _, err := fleetv1.NewGeofenceServiceClient(conn).CreateZone(ctx, &fleetv1.CreateZoneRequest{Zone: &fleetv1.Zone{
		ZoneId: "depot", Name: "depot", RadiusM: 300,
		Geojson: fmt.Sprintf(`{"type":"Point","coordinates":[%f,%f]}`, depotLon, depotLat),
		Alert:   fleetv1.ZoneAlert_ZONE_ALERT_ENTER_EXIT,
	}}); err != nil {
		t.Fatalf("create zone: %v", err)
	}
	var d *teltonikaDevice
	// The gateway's mirror of the registry learns of the device within moments.
	waitUntil(t, ctx, "the registered device accepted", func() (bool, string) {
		var ans byte
		d, ans = dialTeltonika(t, p.TeltonikaTCP, imei)
		return ans == codec.HandshakeAccept, fmt.Sprintf("handshake %#02x", ans)
	})
	start := time.Now().Add(-2 * time.Minute).Truncate(time.Second)
	path := []struct {
		dLat  float64
		speed uint16
	}{{0.0090, 30}, {0.0080, 30}, {0.0010, 20}, {0.0002, 5}, {0, 0}, {0, 0}}
	for i, pt := range path {
		d.report(start.Add(time.Duration(i)*10*time.Second), depotLat+pt.dLat, depotLon, pt.speed)
	}

	tracking := fleetv1.NewTrackingServiceClient(conn)
	waitUntil(t, ctx, "the device's last fix in tracking", func() (bool, string) {
		resp, err := tracking.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: vehicle})
		if err != nil {
			return false, err.Error()
		}
		fix := resp.GetVehicle().GetState().GetLastFix()
		pos := fix.GetPosition()
		return pos != nil && math.Abs(pos.GetLatitude()-depotLat) < 1e-6 && math.Abs(pos.GetLongitude()-depotLon) < 1e-6,
			fmt.Sprintf("last fix %v", fix)
	})
	waitUntil(t, ctx, "an enter event for the depot", func() (bool, string) {
		resp, err := fleetv1.NewGeofenceServiceClient(conn).ListZoneEvents(ctx, &fleetv1.ListZoneEventsRequest{ZoneId: "depot", VehicleId: vehicle})
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
	// Dispatch knows the vehicle once its own consumer has applied a record (the device
	// is not in the vehicle registry): until then the command is NotFound.
	var sent *fleetv1.SendCommandResponse
	waitUntil(t, ctx, "dispatch to know the vehicle", func() (bool, string) {
		var err error
		sent, err = cmds.SendCommand(ctx, &fleetv1.SendCommandRequest{VehicleId: vehicle, Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE, Who: "test"})
		if status.Code(err) == codes.NotFound {
			return false, err.Error()
		}
		if err != nil {
			t.Fatalf("send command: %v", err)
		}
		return true, ""
	})
	id := sent.GetCommand().GetCommandId()
	// The device keeps reporting (parked) until the command arrives, as a tracker would.
	var text string
	for i := len(path); text == ""; i++ {
		select {
		case text = <-d.commands:
		case <-time.After(2 * time.Second):
			d.report(start.Add(time.Duration(i)*10*time.Second), depotLat, depotLon, 0)
		case <-ctx.Done():
			t.Fatalf("no command reached the device")
		}
	}
	if text != "setdigout 1" {
		t.Fatalf("device got %q, want \"setdigout 1\"", text)
	}
	d.send(codec.AppendFrame(nil, codec.AppendMessage(nil, codec.TypeResponse, "DOUT1:1 DOUT2:0")))
	waitUntil(t, ctx, "the command executed", func() (bool, string) {
		resp, err := cmds.GetCommand(ctx, &fleetv1.GetCommandRequest{CommandId: id})
		if err != nil {
			return false, err.Error()
		}
		c := resp.GetCommand()
		return c.GetState() == fleetv1.CommandState_COMMAND_STATE_EXECUTED, fmt.Sprintf("state %v (%s)", c.GetState(), c.GetStateReason())
	})
}

// A simulated fleet reporting as Teltonika devices (fleetsim --protocol teltonika) reaches
// tracking like one on NATS.
func TestSimulatedTeltonikaFleet(t *testing.T) {
	const vehicles = 5
	p := startPlatform(t, Options{RedisURL: "memory",
		Services:  append(append([]string(nil), AllServices...), Teltonika),
		Teltonika: TeltonikaOptions{TCPAddr: "127.0.0.1:0"},
	})
	cfg := fleetsim.DefaultConfig()
	cfg.Vehicles, cfg.Seed, cfg.Prefix = vehicles, 11, "tt-"
	cfg.Protocol, cfg.TeltonikaAddr = fleetsim.ProtocolTeltonika, p.TeltonikaTCP
	cfg.FixedInterval = 2 * time.Second
	fleet, err := fleetsim.New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	devices, err := natsauth.OpenDevices(ctx, p.Bus, 1, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range fleet.Devices() {
		imei, vehicle, _ := strings.Cut(line, " ")
		if err := p.TeltonikaDevices.Add(imei, vehicle); err != nil {
			t.Fatal(err)
		}
		if _, _, err := devices.Add(ctx, natsauth.Device{ID: vehicle, Model: "fleetsim", Protocol: "teltonika"}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- fleet.Run(ctx, nil) }()
	defer func() { cancel(); <-done }()
	tracking := fleetv1.NewTrackingServiceClient(dial(t, p))
	waitUntil(t, ctx, "every simulated Teltonika vehicle in tracking", func() (bool, string) {
		resp, err := tracking.ListVehicles(ctx, &fleetv1.ListVehiclesRequest{PageSize: 100})
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, v := range resp.GetVehicles() {
			if strings.HasPrefix(v.GetVehicleId(), "tt-") && v.GetState().GetLastFix() != nil {
				n++
			}
		}
		return n == vehicles, fmt.Sprintf("%d of %d vehicles with a fix (acked frames %d)", n, vehicles, fleet.Stats().Acked)
	})
}
