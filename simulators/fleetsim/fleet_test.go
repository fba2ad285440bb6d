package fleetsim

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openBus starts an embedded NATS server; streams are created only when ensure is true.
func openBus(t *testing.T, ensure bool) *bus.Bus {
	t.Helper()
	return natstest.Open(t, natstest.Options{NoStreams: !ensure})
}

func ensureStreams(t *testing.T, b *bus.Bus) {
	t.Helper()
	natstest.EnsureStreams(t, b, bus.StreamConfig{})
}

// collector reads everything stored in the telemetry stream.
type collector struct {
	mu      sync.Mutex
	records map[string][]telemetry.Record // by vehicle, in stream order
	replies []*fleetv1.CommandReply
	alarms  int
}

func collect(t *testing.T, ctx context.Context, b *bus.Bus) *collector {
	t.Helper()
	c := &collector{records: map[string][]telemetry.Record{}}
	cons, err := b.OrderedConsumer(ctx, bus.TelemetryStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		addr, err := bus.ParseSubject(m.Subject())
		if err != nil {
			t.Errorf("stored subject %q: %v", m.Subject(), err)
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		switch addr.Kind {
		case bus.KindReply:
			var r fleetv1.CommandReply
			if err := proto.Unmarshal(m.Data(), &r); err != nil {
				t.Errorf("reply: %v", err)
			}
			c.replies = append(c.replies, &r)
		default:
			recs, bad, err := wire.DecodeBatch(addr.Vehicle, m.Data(), false)
			if err != nil || len(bad) > 0 {
				t.Errorf("decode %s: %v %v", m.Subject(), err, bad)
				return
			}
			if addr.Kind == bus.KindAlarm {
				c.alarms++
			}
			c.records[addr.Vehicle] = append(c.records[addr.Vehicle], recs...)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return c
}

func (c *collector) vehicles() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.records)
}

func (c *collector) last(v string) (telemetry.Record, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rs := c.records[v]
	if len(rs) == 0 {
		return telemetry.Record{}, 0
	}
	return rs[len(rs)-1], len(rs)
}

func (c *collector) since(v string, n int) []telemetry.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]telemetry.Record(nil), c.records[v][n:]...)
}

func (c *collector) repliesFor(id string) []fleetv1.CommandReplyStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []fleetv1.CommandReplyStatus
	for _, r := range c.replies {
		if r.GetCommandId() == id {
			out = append(out, r.GetStatus())
		}
	}
	return out
}

// eventually polls cond until it holds or a generous timeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runFleet(t *testing.T, cfg Config, b *bus.Bus) *Fleet {
	t.Helper()
	f, err := New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, b.Conn()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return f
}

func TestRunPublishesEveryVehicleWithAllFields(t *testing.T) {
	b := openBus(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := collect(t, ctx, b)
	cfg := DefaultConfig()
	cfg.Vehicles = 40
	cfg.FixedInterval = time.Second
	f := runFleet(t, cfg, b)
	eventually(t, "records from all 40 vehicles", func() bool { return c.vehicles() == 40 })
	all := telemetry.HasIgnition | telemetry.HasOdometer | telemetry.HasEngineHours | telemetry.HasFuelLitres |
		telemetry.HasFuelPercent | telemetry.HasExternalVoltage | telemetry.HasBatteryVoltage |
		telemetry.HasRPM | telemetry.HasCoolantTemp | telemetry.HasMIL
	for _, id := range f.Sim().VehicleIDs() {
		r, _ := c.last(id)
		if !r.Has(all) {
			t.Errorf("%s: fields %b, want all of %b", id, r.Fields, all)
		}
		if r.FixValid && r.CheckPosition() != nil {
			t.Errorf("%s: position %v: %v", id, r, r.CheckPosition())
		}
		if r.Sequence == 0 || r.Satellites == 0 && r.FixValid || len(r.IO) < 5 || r.DeviceTime.IsZero() {
			t.Errorf("%s: incomplete record %+v", id, r)
		}
	}
	eventually(t, "acknowledged publishes", func() bool { return f.Stats().Acked > 0 })
}

func TestRunRetriesUntilStreamsExist(t *testing.T) {
	b := openBus(t, false)
	cfg := DefaultConfig()
	cfg.Vehicles = 5
	cfg.FixedInterval = time.Second
	f, err := New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	first := map[string]uint64{} // each vehicle's first sequence, refused by the missing stream
	f.Observe(func(p Packet) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := first[p.Vehicle]; !ok {
			first[p.Vehicle] = p.FirstSeq
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, b.Conn()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	eventually(t, "publish errors while no stream exists", func() bool { return f.Stats().PublishErrors > 0 })
	ensureStreams(t, b)
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	c := collect(t, cctx, b)
	eventually(t, "records refused earlier to be retried and stored", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if len(first) < cfg.Vehicles {
			return false
		}
		for id, seq := range first {
			found := false
			for _, r := range c.since(id, 0) {
				found = found || r.Sequence == seq
			}
			if !found {
				return false
			}
		}
		return true
	})
	if st := f.Stats(); st.Dropped != 0 {
		t.Errorf("dropped %d packets, want 0", st.Dropped)
	}
}

func sendCommand(t *testing.T, b *bus.Bus, cmd *fleetv1.DeviceCommand) {
	t.Helper()
	data, err := proto.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Conn().Publish(bus.CommandSubject(cmd.GetVehicleId()), data); err != nil {
		t.Fatal(err)
	}
}

func TestImmobilizeStopsVehicleUntilResume(t *testing.T) {
	b := openBus(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	c := collect(t, ctx, b)
	cfg := DefaultConfig()
	cfg.Vehicles = 1
	cfg.ShiftHours = 23 // on the road now
	cfg.FixedInterval = 5 * time.Second
	cfg.Speedup = 60
	cfg.Start = time.Now().Add(-2 * time.Hour)
	cfg.InvalidFixProb, cfg.DuplicateProb, cfg.Tunnels = 0, 0, false
	f := runFleet(t, cfg, b)
	id := f.Sim().VehicleIDs()[0]
	eventually(t, "the vehicle driving", func() bool { r, _ := c.last(id); return r.SpeedKmh > 10 })

	// Driving: the tracker checks its own speed and refuses (its default limit, 5 km/h).
	sendCommand(t, b, &fleetv1.DeviceCommand{CommandId: "imm-0", VehicleId: id, Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE})
	eventually(t, "IMMOBILIZE refused at speed", func() bool { return len(c.repliesFor("imm-0")) == 1 })
	if got := c.repliesFor("imm-0"); got[0] != fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_REJECTED {
		t.Fatalf("replies %v at speed, want REJECTED", got)
	}
	// A limit above its speed (here to test the stop itself) lets it cut the engine.
	limit := 300.0
	sendCommand(t, b, &fleetv1.DeviceCommand{CommandId: "imm-1", VehicleId: id, Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE, MaxSpeedKmh: &limit})
	eventually(t, "IMMOBILIZE accepted and executed", func() bool { return len(c.repliesFor("imm-1")) == 2 })
	if got := c.repliesFor("imm-1"); got[0] != fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_ACCEPTED || got[1] != fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_EXECUTED {
		t.Fatalf("replies %v, want ACCEPTED, EXECUTED", got)
	}
	eventually(t, "the vehicle standing with the engine off", func() bool {
		r, _ := c.last(id)
		return r.SpeedKmh == 0 && !r.Ignition
	})
	_, n := c.last(id)
	// Three simulated minutes later it has not moved.
	eventually(t, "three simulated minutes of records", func() bool {
		r, _ := c.last(id)
		rs := c.since(id, n)
		return len(rs) > 0 && r.DeviceTime.Sub(rs[0].DeviceTime) >= 3*time.Minute
	})
	rs := c.since(id, n)
	for _, r := range rs {
		if r.SpeedKmh != 0 || r.Ignition || r.OdometerM != rs[0].OdometerM {
			t.Fatalf("immobilised vehicle moved: speed %v ignition %v odometer %v→%v", r.SpeedKmh, r.Ignition, rs[0].OdometerM, r.OdometerM)
		}
	}

	stop := rs[len(rs)-1]
	_, n = c.last(id)
	sendCommand(t, b, &fleetv1.DeviceCommand{CommandId: "res-1", VehicleId: id, Kind: fleetv1.CommandKind_COMMAND_KIND_RESUME})
	eventually(t, "the vehicle driving again after RESUME", func() bool { r, _ := c.last(id); return r.SpeedKmh > 10 && r.Ignition })
	// It drives on from where it stopped.
	for _, r := range c.since(id, n) {
		if r.FixValid && r.SpeedKmh > 0 {
			if d := geo.DistanceM(geo.Point{Lat: stop.Lat, Lon: stop.Lon}, geo.Point{Lat: r.Lat, Lon: r.Lon}); d > 150 {
				t.Errorf("first moving fix after RESUME %.0f m from where the vehicle stood", d)
			}
			break
		}
	}
}

func TestLocateNowReportsAtOnce(t *testing.T) {
	b := openBus(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := collect(t, ctx, b)
	cfg := DefaultConfig()
	cfg.Vehicles = 1
	cfg.ParkedInterval = 6 * time.Hour
	cfg.MovingInterval = 6 * time.Hour
	// Parked overnight: the shift starts hours from now.
	now := time.Now()
	cfg.UTCOffset = time.Minute // the local clock is UTC (zero means "from the longitude")
	cfg.ShiftStartMin = float64((now.UTC().Hour()+6)%24) + 0.1
	cfg.ShiftStartMax = cfg.ShiftStartMin + 0.2
	cfg.ShiftHours = 2
	f := runFleet(t, cfg, b)
	id := f.Sim().VehicleIDs()[0]
	eventually(t, "the first record", func() bool { _, n := c.last(id); return n >= 1 })
	_, n := c.last(id)
	sendCommand(t, b, &fleetv1.DeviceCommand{CommandId: "loc-1", VehicleId: id, Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW})
	eventually(t, "a record after LOCATE_NOW", func() bool { _, m := c.last(id); return m > n })
	eventually(t, "LOCATE_NOW executed", func() bool { return len(c.repliesFor("loc-1")) == 2 })

	// An expired command is rejected and not executed.
	sendCommand(t, b, &fleetv1.DeviceCommand{CommandId: "loc-old", VehicleId: id, Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW,
		ExpireTime: timestamppb.New(now.Add(-time.Minute))})
	eventually(t, "the expired command rejected", func() bool { return len(c.repliesFor("loc-old")) == 1 })
	if got := c.repliesFor("loc-old")[0]; got != fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_REJECTED {
		t.Errorf("expired command: got %v, want REJECTED", got)
	}
	// A repeated command id is answered again but not executed again.
	_, n = c.last(id)
	sendCommand(t, b, &fleetv1.DeviceCommand{CommandId: "loc-1", VehicleId: id, Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW})
	eventually(t, "the repeated command answered again", func() bool { return len(c.repliesFor("loc-1")) == 4 })
	if _, m := c.last(id); m != n {
		t.Errorf("repeated LOCATE_NOW produced %d records, want 0", m-n)
	}
}
