package maintenance

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestService returns a service on a memory store without a bus; tests feed records
// with feed and see the events it would publish.
func newTestService(t *testing.T, cfg Config) *Service {
	t.Helper()
	s, err := New(cfg, nil, NewMemoryStore(), testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// feed applies records as one batch and returns the events raised.
func feed(t *testing.T, s *Service, recs ...telemetry.Record) []Event {
	t.Helper()
	return feedKind(t, s, false, recs...)
}

func feedKind(t *testing.T, s *Service, diag bool, recs ...telemetry.Record) []Event {
	t.Helper()
	ctx := context.Background()
	by := map[string][]input{}
	for _, r := range recs {
		by[r.VehicleID] = append(by[r.VehicleID], input{rec: r, side: diag, diag: diag})
	}
	evs, commit, err := s.apply(ctx, by)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if err := commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	return evs
}

type recOpt func(*telemetry.Record)

func odo(km float64) recOpt {
	return func(r *telemetry.Record) { r.OdometerM = km * 1000; r.Set(telemetry.HasOdometer) }
}

func hours(h float64) recOpt {
	return func(r *telemetry.Record) { r.EngineHours = h; r.Set(telemetry.HasEngineHours) }
}

func ign(on bool) recOpt {
	return func(r *telemetry.Record) { r.Ignition = on; r.Set(telemetry.HasIgnition) }
}

func fuelL(l float64) recOpt {
	return func(r *telemetry.Record) { r.FuelLitres = l; r.Set(telemetry.HasFuelLitres) }
}

func speed(kmh float64) recOpt { return func(r *telemetry.Record) { r.SpeedKmh = kmh } }

func dtcs(c ...string) recOpt { return func(r *telemetry.Record) { r.FaultCodes = c } }

func mil(on bool) recOpt { return func(r *telemetry.Record) { r.MIL = on; r.Set(telemetry.HasMIL) } }

func coolant(c float64) recOpt {
	return func(r *telemetry.Record) { r.CoolantTempC = c; r.Set(telemetry.HasCoolantTemp) }
}

func extV(v float64) recOpt {
	return func(r *telemetry.Record) { r.ExternalVoltage = v; r.Set(telemetry.HasExternalVoltage) }
}

func rec(vehicle string, t time.Time, opts ...recOpt) telemetry.Record {
	r := telemetry.Record{VehicleID: vehicle, DeviceTime: t, Lat: 45.1, Lon: 9.2, FixValid: true, Satellites: 9}
	for _, o := range opts {
		o(&r)
	}
	return r
}

// kinds lists the kinds of evs.
func kinds(evs []Event) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.Kind)
	}
	return out
}
