package wire

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func fullRecord() telemetry.Record {
	r := telemetry.Record{
		VehicleID: "veh-1", DeviceTime: time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC), Sequence: 42,
		Lat: 52.52, Lon: 13.405, AltitudeM: 34, SpeedKmh: 48.5, HeadingDeg: 270, Satellites: 11, HDOP: 0.9, FixValid: true,
		Ignition: true, OdometerM: 123456, EngineHours: 789.5, FuelLitres: 41.2, FuelPercent: 68.7,
		ExternalVoltage: 13.9, BatteryVoltage: 4.1, RPM: 1800, CoolantTempC: 88, MIL: true,
		FaultCodes: []string{"P0301"}, Alarms: []telemetry.AlarmKind{telemetry.AlarmTow, telemetry.AlarmPanic},
		IO: map[string]float64{"21": 4}, Movement: true, GSMLevel: 3, PDOP: 1.7,
	}
	r.Fields = telemetry.HasIgnition | telemetry.HasOdometer | telemetry.HasEngineHours | telemetry.HasFuelLitres |
		telemetry.HasFuelPercent | telemetry.HasExternalVoltage | telemetry.HasBatteryVoltage | telemetry.HasRPM |
		telemetry.HasCoolantTemp | telemetry.HasMIL | telemetry.HasMovement | telemetry.HasGSMLevel | telemetry.HasPDOP
	return r
}

func TestRoundTripKeepsEveryField(t *testing.T) {
	in := fullRecord()
	sent := in.DeviceTime.Add(time.Second)
	data, err := EncodeBatch("veh-1", sent, []telemetry.Record{in})
	if err != nil {
		t.Fatal(err)
	}
	for _, asJSON := range []bool{false, true} {
		payload := data
		if asJSON {
			var b fleetv1.TelemetryBatch
			if err := proto.Unmarshal(data, &b); err != nil {
				t.Fatal(err)
			}
			payload, _ = protojson.Marshal(&b)
		}
		got, bad, err := DecodeBatch("veh-1", payload, asJSON)
		if err != nil || len(bad) != 0 || len(got) != 1 {
			t.Fatalf("json=%v: got %d records, bad %v, err %v", asJSON, len(got), bad, err)
		}
		want := in
		want.SentTime = sent
		g := got[0]
		if !g.DeviceTime.Equal(want.DeviceTime) || !g.SentTime.Equal(want.SentTime) {
			t.Fatalf("json=%v: times %v/%v, want %v/%v", asJSON, g.DeviceTime, g.SentTime, want.DeviceTime, want.SentTime)
		}
		g.DeviceTime, g.SentTime = want.DeviceTime, want.SentTime
		if g.Fields != want.Fields || g.Lat != want.Lat || g.FuelLitres != want.FuelLitres || g.MIL != want.MIL ||
			len(g.Alarms) != 2 || g.Alarms[1] != telemetry.AlarmPanic || g.FaultCodes[0] != "P0301" || g.IO["21"] != 4 || g.Sequence != 42 ||
			!g.Movement || g.GSMLevel != 3 || g.PDOP != 1.7 {
			t.Fatalf("json=%v: got %+v, want %+v", asJSON, g, want)
		}
	}
}

func TestAbsentOptionalsStayAbsent(t *testing.T) {
	r := telemetry.Record{VehicleID: "v", DeviceTime: time.Unix(1, 0), FixValid: true, Lat: 1, Lon: 1}
	data, _ := EncodeBatch("v", time.Unix(2, 0), []telemetry.Record{r})
	got, _, err := DecodeBatch("v", data, false)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Fields != 0 {
		t.Fatalf("fields = %b, want none: absent values must not read as zero", got[0].Fields)
	}
}

func TestDecodeRejects(t *testing.T) {
	ts := timestamppb.New(time.Unix(1_700_000_000, 0))
	enc := func(b *fleetv1.TelemetryBatch) []byte { d, _ := proto.Marshal(b); return d }
	neg := -5.0
	tests := []struct {
		name    string
		vehicle string
		data    []byte
		wantErr error
		wantBad int
		wantOK  int
	}{
		{"garbage", "v1", []byte{0xff, 0xff, 0xff, 0x01}, ErrMalformed, 0, 0},
		{"too large", "v1", make([]byte, MaxMessageBytes+1), ErrTooLarge, 0, 0},
		{"empty batch", "v1", enc(&fleetv1.TelemetryBatch{}), ErrEmptyBatch, 0, 0},
		{"batch for another vehicle", "v1", enc(&fleetv1.TelemetryBatch{VehicleId: "v2", Records: []*fleetv1.TelemetryRecord{{DeviceTime: ts}}}), ErrVehicleMismatch, 0, 0},
		{"bad subject vehicle", "v.1", enc(&fleetv1.TelemetryBatch{Records: []*fleetv1.TelemetryRecord{{DeviceTime: ts}}}), telemetry.ErrBadVehicleID, 0, 0},
		{"too many records", "v1", enc(&fleetv1.TelemetryBatch{Records: make([]*fleetv1.TelemetryRecord, MaxBatchRecords+1)}), ErrTooManyRecords, 0, 0},
		{"one record without time, one good", "v1", enc(&fleetv1.TelemetryBatch{Records: []*fleetv1.TelemetryRecord{{}, {DeviceTime: ts}}}), nil, 1, 1},
		{"record of another vehicle", "v1", enc(&fleetv1.TelemetryBatch{Records: []*fleetv1.TelemetryRecord{{VehicleId: "v2", DeviceTime: ts}, {DeviceTime: ts}}}), nil, 1, 1},
		{"negative odometer", "v1", enc(&fleetv1.TelemetryBatch{Records: []*fleetv1.TelemetryRecord{{DeviceTime: ts, OdometerM: &neg}}}), nil, 1, 0},
		{"NaN position kept for filters", "v1", enc(&fleetv1.TelemetryBatch{Records: []*fleetv1.TelemetryRecord{{DeviceTime: ts, Latitude: math.NaN(), Alarms: []fleetv1.AlarmKind{fleetv1.AlarmKind_ALARM_KIND_PANIC}}}}), nil, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, bad, err := DecodeBatch(tt.vehicle, tt.data, false)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if len(bad) != tt.wantBad || len(got) != tt.wantOK {
				t.Fatalf("got %d good, %d bad (%v); want %d good, %d bad", len(got), len(bad), bad, tt.wantOK, tt.wantBad)
			}
		})
	}
}

func TestNaNPositionIsClassified(t *testing.T) {
	r := telemetry.Record{Lat: math.NaN(), Lon: 1, FixValid: true}
	if err := r.CheckPosition(); !errors.Is(err, telemetry.ErrNaNCoordinate) {
		t.Fatalf("CheckPosition = %v, want ErrNaNCoordinate", err)
	}
	r = telemetry.Record{Lat: 91, Lon: 1, FixValid: true}
	if err := r.CheckPosition(); !errors.Is(err, telemetry.ErrOutOfRange) {
		t.Fatalf("CheckPosition = %v, want ErrOutOfRange", err)
	}
}

func TestMalformedJSON(t *testing.T) {
	_, _, err := DecodeBatch("v1", []byte(`{"records": [`), true)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

// FuzzDecodeBatch feeds arbitrary bytes to the decoder: it must never panic, and whatever
// it accepts must satisfy the invariants the services rely on.
func FuzzDecodeBatch(f *testing.F) {
	good, _ := EncodeBatch("veh-1", time.Unix(1_700_000_000, 0), []telemetry.Record{fullRecord()})
	f.Add(good, false)
	f.Add([]byte(`{"vehicleId":"veh-1","records":[{"deviceTime":"2026-01-01T00:00:00Z","latitude":1}]}`), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, data []byte, asJSON bool) {
		recs, _, err := DecodeBatch("veh-1", data, asJSON)
		if err != nil {
			if len(recs) != 0 {
				t.Fatalf("error %v with %d records", err, len(recs))
			}
			return
		}
		if len(recs) > MaxBatchRecords {
			t.Fatalf("%d records accepted", len(recs))
		}
		for _, r := range recs {
			if r.VehicleID != "veh-1" {
				t.Fatalf("record for %q accepted on veh-1's subject", r.VehicleID)
			}
			if r.Has(telemetry.HasOdometer) && (r.OdometerM < 0 || math.IsNaN(r.OdometerM)) {
				t.Fatalf("bad odometer %v accepted", r.OdometerM)
			}
			if len(r.IO) > MaxIOEntries || len(r.FaultCodes) > MaxFaultCodes {
				t.Fatalf("unbounded io/fault codes accepted")
			}
		}
	})
}

func BenchmarkDecodeBatch(b *testing.B) {
	recs := make([]telemetry.Record, 10)
	for i := range recs {
		recs[i] = fullRecord()
		recs[i].IO = nil
		recs[i].FaultCodes = nil
	}
	data, _ := EncodeBatch("veh-1", time.Now(), recs)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeBatch("veh-1", data, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(recs))/b.Elapsed().Seconds(), "records/s")
}

func TestReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: x", ErrMalformed), "malformed"},
		{fmt.Errorf("%w: x", ErrTooLarge), "too_large"},
		{ErrEmptyBatch, "empty_batch"},
		{fmt.Errorf("%w: x", telemetry.ErrBadVehicleID), "bad_vehicle_id"},
		{&RecordError{Index: 2, Err: telemetry.ErrNoDeviceTime}, "no_device_time"},
		{&RecordError{Index: 0, Err: fmt.Errorf("odometer: %w", telemetry.ErrNegativeQuantity)}, "negative_counter"},
		{&RecordError{Index: 0, Err: errors.New("other")}, "bad_record"},
		{telemetry.TimeBounds{}.Check(time.Now().Add(time.Hour), time.Now()), "future_time"},
		{telemetry.TimeBounds{}.Check(time.Now().AddDate(-20, 0, 0), time.Now()), "too_old"},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func BenchmarkDecodeBatchJSON(b *testing.B) {
	recs := make([]telemetry.Record, 10)
	for i := range recs {
		recs[i] = fullRecord()
		recs[i].IO = nil
		recs[i].FaultCodes = nil
	}
	bin, _ := EncodeBatch("veh-1", time.Now(), recs)
	var pb fleetv1.TelemetryBatch
	if err := proto.Unmarshal(bin, &pb); err != nil {
		b.Fatal(err)
	}
	data, _ := protojson.Marshal(&pb)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeBatch("veh-1", data, true); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(recs))/b.Elapsed().Seconds(), "records/s")
}
