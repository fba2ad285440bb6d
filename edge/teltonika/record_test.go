package teltonika

import (
	"slices"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/edge/teltonika/codec"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

func TestToRecord(t *testing.T) {
	ts := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	base := codec.Record{TimestampMs: ts.UnixMilli(), Lon: 134049000, Lat: 525201000, Altitude: 34, Angle: 90, Satellites: 11, Speed: 42}
	with := func(io ...codec.IO) codec.Record { r := base; r.IO = io; return r }
	u := func(id uint16, size uint8, v uint64) codec.IO { return codec.IO{ID: id, Size: size, Value: v} }

	tests := []struct {
		name  string
		in    codec.Record
		check func(t *testing.T, r *telemetry.Record)
	}{
		{"position", base, func(t *testing.T, r *telemetry.Record) {
			if !r.DeviceTime.Equal(ts) || r.Lat != 52.5201 || r.Lon != 13.4049 || r.AltitudeM != 34 || r.HeadingDeg != 90 ||
				r.Satellites != 11 || r.SpeedKmh != 42 || !r.FixValid {
				t.Errorf("got %+v", r)
			}
			if r.Fields != 0 || len(r.IO) != 0 || len(r.Alarms) != 0 {
				t.Errorf("got fields %b, IO %v, alarms %v; want none", r.Fields, r.IO, r.Alarms)
			}
		}},
		{"no fix: zero satellites", func() codec.Record { r := base; r.Satellites, r.Speed, r.Angle = 0, 0, 0; return r }(),
			func(t *testing.T, r *telemetry.Record) {
				if r.FixValid {
					t.Errorf("got valid fix, want invalid")
				}
			}},
		{"no fix: GNSS status 2", with(u(69, 1, 2)), func(t *testing.T, r *telemetry.Record) {
			if r.FixValid || r.IO["69"] != 2 {
				t.Errorf("got fix %v, IO 69 %v; want invalid, 2", r.FixValid, r.IO["69"])
			}
		}},
		{"mapped fields", with(u(239, 1, 1), u(240, 1, 1), u(21, 1, 4), u(66, 2, 12850), u(67, 2, 4012), u(16, 4, 123456),
			u(89, 1, 55), u(84, 2, 415), u(24, 2, 43), u(181, 2, 12), u(182, 2, 8), u(36, 2, 1500), u(32, 1, 0xF6)),
			func(t *testing.T, r *telemetry.Record) {
				want := []struct {
					name      string
					has       bool
					got, want float64
				}{
					{"ignition", r.Has(telemetry.HasIgnition) && r.Ignition, 1, 1},
					{"movement", r.Has(telemetry.HasMovement) && r.Movement, 1, 1},
					{"gsm", r.Has(telemetry.HasGSMLevel), float64(r.GSMLevel), 4},
					{"external V", r.Has(telemetry.HasExternalVoltage), r.ExternalVoltage, 12.85},
					{"battery V", r.Has(telemetry.HasBatteryVoltage), r.BatteryVoltage, 4.012},
					{"odometer", r.Has(telemetry.HasOdometer), r.OdometerM, 123456},
					{"fuel %", r.Has(telemetry.HasFuelPercent), r.FuelPercent, 55},
					{"fuel l", r.Has(telemetry.HasFuelLitres), r.FuelLitres, 41.5},
					{"speed", true, r.SpeedKmh, 43},
					{"pdop", r.Has(telemetry.HasPDOP), r.PDOP, 1.2},
					{"hdop", true, r.HDOP, 0.8},
					{"rpm", r.Has(telemetry.HasRPM), r.RPM, 1500},
					{"coolant", r.Has(telemetry.HasCoolantTemp), r.CoolantTempC, -10},
				}
				for _, w := range want {
					if !w.has || w.got != w.want {
						t.Errorf("%s: got %v (present %v), want %v", w.name, w.got, w.has, w.want)
					}
				}
				if len(r.IO) != 0 {
					t.Errorf("IO: got %v, want nothing left over", r.IO)
				}
			}},
		{"alarms", with(u(249, 1, 1), u(246, 1, 1), u(252, 1, 1), u(247, 1, 2)), func(t *testing.T, r *telemetry.Record) {
			want := []telemetry.AlarmKind{telemetry.AlarmGNSSJamming, telemetry.AlarmTow, telemetry.AlarmPowerCut, telemetry.AlarmCrash}
			if !slices.Equal(r.Alarms, want) {
				t.Errorf("got %v, want %v", r.Alarms, want)
			}
			if r.IO["249"] != 1 {
				t.Errorf("jamming level: got %v, want 1", r.IO["249"])
			}
		}},
		{"cleared alarm states raise nothing", with(u(249, 1, 0), u(246, 1, 0), u(252, 1, 0), u(247, 1, 0)), func(t *testing.T, r *telemetry.Record) {
			if len(r.Alarms) != 0 {
				t.Errorf("got %v, want none", r.Alarms)
			}
		}},
		{"unknown and digital elements kept raw", with(u(1, 1, 1), u(179, 1, 1), u(78, 8, 1<<40), u(300, 4, 42)), func(t *testing.T, r *telemetry.Record) {
			want := map[string]float64{"1": 1, "179": 1, "78": 1 << 40, "300": 42}
			if len(r.IO) != len(want) {
				t.Errorf("got %v, want %v", r.IO, want)
			}
			for k, v := range want {
				if r.IO[k] != v {
					t.Errorf("IO %s: got %v, want %v", k, r.IO[k], v)
				}
			}
		}},
		{"fault codes from NX 281", with(codec.IO{ID: 281, Raw: []byte("P0301, P0420,")}, codec.IO{ID: 256, Raw: []byte("WV1ZZZ2EZ86015388")}),
			func(t *testing.T, r *telemetry.Record) {
				if !slices.Equal(r.FaultCodes, []string{"P0301", "P0420"}) {
					t.Errorf("got %q, want [P0301 P0420]", r.FaultCodes)
				}
			}},
		{"GSM above 5 clamped", with(u(21, 1, 9)), func(t *testing.T, r *telemetry.Record) {
			if r.GSMLevel != 5 {
				t.Errorf("got %d, want 5", r.GSMLevel)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r telemetry.Record
			toRecord("veh-1", &tt.in, &r)
			if r.VehicleID != "veh-1" {
				t.Errorf("vehicle: got %q, want veh-1", r.VehicleID)
			}
			tt.check(t, &r)
		})
	}
}
