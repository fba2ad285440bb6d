package fleetsim

import (
	"math"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// maxBatch is the most records one packet carries (wire.MaxBatchRecords).
const maxBatch = 500

// IO element ids the simulated trackers report (Teltonika numbering).
const (
	ioGSMSignal   = "21"  // 0..5
	ioGNSSStatus  = "69"  // 0 off, 1 fix, 2 no fix
	ioTripOdo     = "199" // trip odometer, metres
	ioMovement    = "240" // 0/1
	ioJamming     = "249" // 0 none, 1 warning, 2 critical
	ioDigitalIn1  = "1"   // door switch
	ioEngineLoadP = "31"  // engine load, percent
)

// sample is one tracker record in a flat form that costs no allocation to build or keep.
type sample struct {
	unixNano                           int64
	seq                                uint64
	lat, lon, alt, speedKmh, heading   float64
	sats                               uint32
	hdop                               float64
	fix                                bool
	ignition                           bool
	odoM, engineH, fuelL, fuelPct      float64
	extV, batV, rpm, coolantC          float64
	mil                                bool
	fault                              string // active DTC, "" when none
	alarm                              telemetry.AlarmKind
	gsm, gnss, trip, moving, jam, door float64
	load                               float64
}

// encoder appends protobuf TelemetryBatch messages (fleet.v1 field numbers) without
// allocating: the generated types would need a dozen heap objects per record. The test
// TestEncoderMatchesWire decodes its output with the generated code and compares it with
// wire.EncodeBatch of the same records.
type encoder struct {
	out, rec, sub []byte
}

func appendTimestamp(b []byte, num protowire.Number, unixNano int64) []byte {
	sec, nsec := unixNano/1e9, unixNano%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	size := 0
	if sec != 0 {
		size += 1 + protowire.SizeVarint(uint64(sec))
	}
	if nsec != 0 {
		size += 1 + protowire.SizeVarint(uint64(nsec))
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	if sec != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(sec))
	}
	if nsec != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(nsec))
	}
	return b
}

func appendDouble(b []byte, num protowire.Number, v float64, always bool) []byte {
	if v == 0 && !always {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(v))
}

func appendBool(b []byte, num protowire.Number, v bool, always bool) []byte {
	if !v && !always {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, protowire.EncodeBool(v))
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendIO(b []byte, key string, v float64) []byte {
	b = protowire.AppendTag(b, 19, protowire.BytesType)
	size := 1 + protowire.SizeBytes(len(key)) + 1 + 8
	b = protowire.AppendVarint(b, uint64(size))
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(v))
}

// record appends one TelemetryRecord body to e.rec.
func (e *encoder) record(vehicle string, s *sample) []byte {
	b := e.rec[:0]
	b = appendString(b, 1, vehicle)
	b = appendTimestamp(b, 2, s.unixNano)
	if s.seq != 0 {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, s.seq)
	}
	b = appendDouble(b, 4, s.lat, false)
	b = appendDouble(b, 5, s.lon, false)
	b = appendDouble(b, 6, s.alt, false)
	b = appendDouble(b, 7, s.speedKmh, false)
	b = appendDouble(b, 8, s.heading, false)
	if s.sats != 0 {
		b = protowire.AppendTag(b, 9, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(s.sats))
	}
	b = appendDouble(b, 10, s.hdop, false)
	b = appendBool(b, 11, s.fix, false)
	b = appendBool(b, 12, s.ignition, true)
	b = appendDouble(b, 13, s.odoM, true)
	b = appendDouble(b, 14, s.engineH, true)
	b = appendDouble(b, 15, s.fuelL, true)
	b = appendDouble(b, 16, s.fuelPct, true)
	b = appendDouble(b, 17, s.extV, true)
	b = appendDouble(b, 18, s.batV, true)
	// Map entries in a fixed order keep the bytes deterministic.
	b = appendIO(b, ioDigitalIn1, s.door)
	b = appendIO(b, ioGSMSignal, s.gsm)
	b = appendIO(b, ioEngineLoadP, s.load)
	b = appendIO(b, ioGNSSStatus, s.gnss)
	b = appendIO(b, ioTripOdo, s.trip)
	b = appendIO(b, ioMovement, s.moving)
	b = appendIO(b, ioJamming, s.jam)
	if s.alarm != telemetry.AlarmUnspecified {
		b = protowire.AppendTag(b, 20, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(protowire.SizeVarint(uint64(s.alarm))))
		b = protowire.AppendVarint(b, uint64(s.alarm))
	}
	d := e.sub[:0]
	d = appendDouble(d, 1, s.rpm, true)
	d = appendDouble(d, 2, s.coolantC, true)
	d = appendBool(d, 3, s.mil, true)
	d = appendString(d, 4, s.fault)
	e.sub = d
	b = protowire.AppendTag(b, 21, protowire.BytesType)
	b = protowire.AppendBytes(b, d)
	e.rec = b
	return b
}

// batch encodes recs as one TelemetryBatch. The result is valid until the next call.
func (e *encoder) batch(vehicle string, sentUnixNano int64, recs []sample) []byte {
	b := e.out[:0]
	b = appendString(b, 1, vehicle)
	b = appendTimestamp(b, 2, sentUnixNano)
	for i := range recs {
		r := e.record(vehicle, &recs[i])
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, r)
	}
	e.out = b
	return b
}

// toRecord converts a sample to the platform's record (tests, ground truth).
func (s *sample) toRecord(vehicle string) telemetry.Record {
	r := telemetry.Record{
		VehicleID:  vehicle,
		Sequence:   s.seq,
		Lat:        s.lat,
		Lon:        s.lon,
		AltitudeM:  s.alt,
		SpeedKmh:   s.speedKmh,
		HeadingDeg: s.heading,
		Satellites: s.sats,
		HDOP:       s.hdop,
		FixValid:   s.fix,
		Fields: telemetry.HasIgnition | telemetry.HasOdometer | telemetry.HasEngineHours |
			telemetry.HasFuelLitres | telemetry.HasFuelPercent | telemetry.HasExternalVoltage |
			telemetry.HasBatteryVoltage | telemetry.HasRPM | telemetry.HasCoolantTemp | telemetry.HasMIL,
		Ignition:        s.ignition,
		OdometerM:       s.odoM,
		EngineHours:     s.engineH,
		FuelLitres:      s.fuelL,
		FuelPercent:     s.fuelPct,
		ExternalVoltage: s.extV,
		BatteryVoltage:  s.batV,
		RPM:             s.rpm,
		CoolantTempC:    s.coolantC,
		MIL:             s.mil,
		IO: map[string]float64{
			ioDigitalIn1: s.door, ioGSMSignal: s.gsm, ioEngineLoadP: s.load, ioGNSSStatus: s.gnss,
			ioTripOdo: s.trip, ioMovement: s.moving, ioJamming: s.jam,
		},
	}
	r.DeviceTime = timeFromUnixNano(s.unixNano)
	if s.fault != "" {
		r.FaultCodes = []string{s.fault}
	}
	if s.alarm != telemetry.AlarmUnspecified {
		r.Alarms = []telemetry.AlarmKind{s.alarm}
	}
	return r
}
