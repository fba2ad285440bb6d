package maintenance

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
)

// TestBadInput: each kind of bad input is handled by its documented rule, counted, and
// the good data around it is kept.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	if _, err := s.SetFuelProfile(ctx, "V1", fuel.Profile{CapacityL: 100}); err != nil {
		t.Fatal(err)
	}
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	feed(t, s, rec("V1", at(0), odo(1000), hours(500), fuelL(60)))

	t.Run("fuel level outside 0..capacity", func(t *testing.T) {
		feed(t, s, rec("V1", at(1), fuelL(150), odo(1000.5)), rec("V1", at(2), fuelL(-3)), rec("V1", at(3), fuelL(103)))
		if n := s.Rejects().Count(RejectFuelOutOfRange); n != 2 {
			t.Fatalf("fuel rejects: got %v, want 2 (150 L and -3 L; 103 L is within the 5 %% tolerance)", n)
		}
		h, _ := s.VehicleHealth(ctx, "V1")
		if h.State.OdometerM != 1000500 {
			t.Fatalf("rest of the record: got odometer %v m, want 1000500 (kept)", h.State.OdometerM)
		}
	})

	t.Run("engine hours running backwards", func(t *testing.T) {
		feed(t, s, rec("V1", at(4), hours(499), odo(1001)))
		if n := s.Rejects().Count(RejectHoursBackwards); n != 1 {
			t.Fatalf("engine hours rejects: got %v, want 1", n)
		}
		h, _ := s.VehicleHealth(ctx, "V1")
		if h.State.EngineHours != 500 || h.State.OdometerM != 1001000 {
			t.Fatalf("after backwards hours: got hours %v odometer %v, want 500 and 1001000", h.State.EngineHours, h.State.OdometerM)
		}
	})

	t.Run("odometer running backwards", func(t *testing.T) {
		feed(t, s, rec("V1", at(5), odo(900)))
		if n := s.Rejects().Count(RejectOdometerBackwards); n != 1 {
			t.Fatalf("odometer rejects: got %v, want 1", n)
		}
	})

	t.Run("unknown and invalid fault codes", func(t *testing.T) {
		feedKind(t, s, true, rec("V1", at(6), dtcs("SPN110-FMI0", "", "P\x01", "P0300")))
		if n := s.Rejects().Count(RejectDTCUnknownFormat); n != 1 {
			t.Fatalf("unknown format: got %v, want 1", n)
		}
		if n := s.Rejects().Count(RejectDTCInvalid); n != 2 {
			t.Fatalf("invalid: got %v, want 2", n)
		}
		fcs, _ := s.FaultCodes(ctx, "V1", true)
		if len(fcs) != 2 || fcs[0].Code != "P0300" || fcs[1].Code != "SPN110-FMI0" || fcs[1].Standard {
			t.Fatalf("codes kept: got %+v, want P0300 and SPN110-FMI0 (non-standard)", fcs)
		}
	})

	t.Run("negative odometer, malformed payload, unknown subject", func(t *testing.T) {
		neg := -5.0
		good := 1002000.0
		b := &fleetv1.TelemetryBatch{VehicleId: "V1", Records: []*fleetv1.TelemetryRecord{
			{DeviceTime: timestamppb.New(at(7)), OdometerM: &neg, FixValid: true, Latitude: 45, Longitude: 9},
			{DeviceTime: timestamppb.New(at(8)), OdometerM: &good, FixValid: true, Latitude: 45, Longitude: 9},
		}}
		data, err := proto.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		msgs := []bus.Msg{
			{Subject: "fleet.in.3.V1.tele", Data: data, StreamSeq: 1, Time: at(8)},
			{Subject: "fleet.in.3.V1.tele", Data: []byte("\xff\xff not protobuf"), StreamSeq: 2, Time: at(8)},
			{Subject: "fleet.in.3.V1.bogus", Data: data, StreamSeq: 3, Time: at(8)},
		}
		if err := s.handle(ctx, msgs); err != nil {
			t.Fatalf("bad input must not fail the batch: %v", err)
		}
		for reason, want := range map[string]float64{"negative_counter": 1, "malformed": 1, "unknown_subject": 1} {
			if n := s.Rejects().Count(reason); n != want {
				t.Errorf("%s: got %v, want %v", reason, n, want)
			}
		}
		h, _ := s.VehicleHealth(ctx, "V1")
		if h.State.OdometerM != good {
			t.Fatalf("the good record of the batch: got odometer %v, want %v", h.State.OdometerM, good)
		}
	})

	t.Run("records older than the last applied", func(t *testing.T) {
		before := s.Rejects().Count(RejectLateRecord)
		feed(t, s, rec("V1", at(1), odo(5000)))
		if n := s.Rejects().Count(RejectLateRecord) - before; n != 1 {
			t.Fatalf("late records: got %v, want 1", n)
		}
		h, _ := s.VehicleHealth(ctx, "V1")
		if h.State.OdometerM != 1002000 {
			t.Fatalf("late record applied: got odometer %v", h.State.OdometerM)
		}
	})
}

// FuzzHandle feeds arbitrary payloads through the bus handler: it never panics and never
// fails the batch (which would have it redelivered for ever).
func FuzzHandle(f *testing.F) {
	at := t0
	good, err := wire.EncodeBatch("V1", at, []telemetry.Record{rec("V1", at, odo(10), fuelL(40), dtcs("P0301", "zz"))})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, false)
	f.Add([]byte(`{"vehicleId":"V1","records":[{"deviceTime":"2026-05-04T08:00:00Z","fuelLevelL":-4,"odometerM":-1}]}`), true)
	f.Add([]byte{0x1a, 0x02, 0x12, 0x00}, false)
	s, err := New(DefaultConfig(), nil, NewMemoryStore(), testLogger(), nil)
	if err != nil {
		f.Fatal(err)
	}
	var seq uint64
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		seq++
		m := bus.Msg{Subject: "fleet.in.0.V1.diag", Data: data, StreamSeq: seq, Time: at}
		if isJSON {
			m.Header = nats.Header{wire.HeaderContentType: []string{wire.ContentTypeJSON}}
		}
		if err := s.handle(context.Background(), []bus.Msg{m}); err != nil {
			t.Fatalf("handler failed on input: %v", err)
		}
	})
}
