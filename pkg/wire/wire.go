// Package wire converts between the tracker protocol on NATS (fleet.v1 protobuf, or its
// JSON form) and the platform's telemetry.Record. It is the only place that knows both.
package wire

import (
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// Limits of one device message. Larger messages are refused by the NATS server before
// they reach a service; the decoder checks again so it is safe on any input.
const (
	MaxBatchRecords = 500
	MaxMessageBytes = 64 << 10
	MaxIOEntries    = 64
	MaxFaultCodes   = 32
)

// ContentTypeJSON, in the "Content-Type" header, marks a JSON-encoded payload (protojson
// form of the same messages). Without it the payload is protobuf binary.
const (
	HeaderContentType = "Content-Type"
	ContentTypeJSON   = "application/json"
)

// Decode errors, matched with errors.Is. Every one means the whole message is unusable.
var (
	ErrTooLarge        = errors.New("message larger than the limit")
	ErrMalformed       = errors.New("malformed payload")
	ErrTooManyRecords  = errors.New("too many records in one batch")
	ErrVehicleMismatch = errors.New("record vehicle differs from the subject's")
	ErrEmptyBatch      = errors.New("batch holds no records")
	// ErrForeignMsgID: the message's Nats-Msg-Id does not begin with its subject's
	// vehicle id (msgid.go): a device trying to squat another publisher's ids.
	ErrForeignMsgID = errors.New("message id does not begin with the subject's vehicle id")
)

// RecordError is a problem with one record of a batch; the other records are still used.
type RecordError struct {
	Index int
	Err   error
}

func (e *RecordError) Error() string { return fmt.Sprintf("record %d: %v", e.Index, e.Err) }
func (e *RecordError) Unwrap() error { return e.Err }

// DecodeBatch decodes a telemetry batch published on vehicle's subject. It returns the
// usable records, and for every record it had to drop, a RecordError (wrong vehicle id,
// missing device time, negative counters). A non-nil error means nothing was usable.
func DecodeBatch(vehicle string, data []byte, json bool) ([]telemetry.Record, []RecordError, error) {
	if len(data) > MaxMessageBytes {
		return nil, nil, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(data), MaxMessageBytes)
	}
	var b fleetv1.TelemetryBatch
	var err error
	if json {
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, &b)
	} else {
		err = proto.Unmarshal(data, &b)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return FromBatch(vehicle, &b)
}

// FromBatch converts a decoded batch; see DecodeBatch.
func FromBatch(vehicle string, b *fleetv1.TelemetryBatch) ([]telemetry.Record, []RecordError, error) {
	if err := telemetry.ValidVehicleID(vehicle); err != nil {
		return nil, nil, err
	}
	if b.GetVehicleId() != "" && b.GetVehicleId() != vehicle {
		return nil, nil, fmt.Errorf("%w: batch says %q, subject %q", ErrVehicleMismatch, b.GetVehicleId(), vehicle)
	}
	if len(b.GetRecords()) == 0 {
		return nil, nil, ErrEmptyBatch
	}
	if len(b.GetRecords()) > MaxBatchRecords {
		return nil, nil, fmt.Errorf("%w: %d > %d", ErrTooManyRecords, len(b.GetRecords()), MaxBatchRecords)
	}
	var sent time.Time
	if b.GetSentTime() != nil {
		sent = b.GetSentTime().AsTime()
	}
	out := make([]telemetry.Record, 0, len(b.GetRecords()))
	var bad []RecordError
	for i, pr := range b.GetRecords() {
		var r telemetry.Record
		if err := FromRecord(vehicle, pr, &r); err != nil {
			bad = append(bad, RecordError{Index: i, Err: err})
			continue
		}
		r.SentTime = sent
		out = append(out, r)
	}
	return out, bad, nil
}

// FromRecord fills r from pr. vehicle is the subject's vehicle; pr's own id must match it
// or be empty. Position problems (NaN, out of range) are not errors here: the record
// keeps them and the services' filters classify them, because its alarms and counters
// are still good.
func FromRecord(vehicle string, pr *fleetv1.TelemetryRecord, r *telemetry.Record) error {
	if id := pr.GetVehicleId(); id != "" && id != vehicle {
		return fmt.Errorf("%w: record says %q, subject %q", ErrVehicleMismatch, id, vehicle)
	}
	if pr.GetDeviceTime() == nil {
		return telemetry.ErrNoDeviceTime
	}
	if err := pr.GetDeviceTime().CheckValid(); err != nil {
		return fmt.Errorf("%w: %v", telemetry.ErrNoDeviceTime, err)
	}
	*r = telemetry.Record{
		VehicleID:  vehicle,
		DeviceTime: pr.GetDeviceTime().AsTime(),
		Sequence:   pr.GetSequence(),
		Lat:        pr.GetLatitude(),
		Lon:        pr.GetLongitude(),
		AltitudeM:  pr.GetAltitudeM(),
		SpeedKmh:   pr.GetSpeedKmh(),
		HeadingDeg: pr.GetHeadingDeg(),
		Satellites: pr.GetSatellites(),
		HDOP:       pr.GetHdop(),
		FixValid:   pr.GetFixValid(),
	}
	if pr.Ignition != nil {
		r.Ignition = *pr.Ignition
		r.Set(telemetry.HasIgnition)
	}
	opt := func(v *float64, f telemetry.Field, dst *float64, nonNegative bool) error {
		if v == nil {
			return nil
		}
		if math.IsNaN(*v) || math.IsInf(*v, 0) {
			return nil // a broken sensor value is dropped, the record is kept
		}
		if nonNegative && *v < 0 {
			return telemetry.ErrNegativeQuantity
		}
		*dst = *v
		r.Set(f)
		return nil
	}
	if err := opt(pr.OdometerM, telemetry.HasOdometer, &r.OdometerM, true); err != nil {
		return fmt.Errorf("odometer: %w", err)
	}
	if err := opt(pr.EngineHours, telemetry.HasEngineHours, &r.EngineHours, true); err != nil {
		return fmt.Errorf("engine hours: %w", err)
	}
	_ = opt(pr.FuelLevelL, telemetry.HasFuelLitres, &r.FuelLitres, false)
	_ = opt(pr.FuelLevelPct, telemetry.HasFuelPercent, &r.FuelPercent, false)
	_ = opt(pr.ExternalVoltageV, telemetry.HasExternalVoltage, &r.ExternalVoltage, false)
	_ = opt(pr.BatteryVoltageV, telemetry.HasBatteryVoltage, &r.BatteryVoltage, false)
	if d := pr.GetDiagnostics(); d != nil {
		_ = opt(d.Rpm, telemetry.HasRPM, &r.RPM, false)
		_ = opt(d.CoolantTempC, telemetry.HasCoolantTemp, &r.CoolantTempC, false)
		if d.Mil != nil {
			r.MIL = *d.Mil
			r.Set(telemetry.HasMIL)
		}
		codes := d.GetFaultCodes()
		if len(codes) > MaxFaultCodes {
			codes = codes[:MaxFaultCodes]
		}
		if len(codes) > 0 {
			r.FaultCodes = append([]string(nil), codes...)
		}
	}
	if pr.Movement != nil {
		r.Movement = *pr.Movement
		r.Set(telemetry.HasMovement)
	}
	if pr.GsmLevel != nil {
		// Levels above 5 are not a scale any tracker uses; clamp rather than drop the record.
		r.GSMLevel = uint8(min(*pr.GsmLevel, 5))
		r.Set(telemetry.HasGSMLevel)
	}
	if err := opt(pr.Pdop, telemetry.HasPDOP, &r.PDOP, true); err != nil {
		return fmt.Errorf("pdop: %w", err)
	}
	for _, a := range pr.GetAlarms() {
		k := telemetry.AlarmKind(a)
		if k.Valid() {
			r.Alarms = append(r.Alarms, k)
		}
	}
	if len(pr.GetIo()) > 0 {
		r.IO = make(map[string]float64, min(len(pr.GetIo()), MaxIOEntries))
		for k, v := range pr.GetIo() {
			if len(r.IO) == MaxIOEntries {
				break
			}
			r.IO[k] = v
		}
	}
	return nil
}

// ToRecord converts r to its wire form (used by simulators and tests).
func ToRecord(r *telemetry.Record) *fleetv1.TelemetryRecord {
	pr := &fleetv1.TelemetryRecord{
		VehicleId:  r.VehicleID,
		DeviceTime: timestamppb.New(r.DeviceTime),
		Sequence:   r.Sequence,
		Latitude:   r.Lat,
		Longitude:  r.Lon,
		AltitudeM:  r.AltitudeM,
		SpeedKmh:   r.SpeedKmh,
		HeadingDeg: r.HeadingDeg,
		Satellites: r.Satellites,
		Hdop:       r.HDOP,
		FixValid:   r.FixValid,
	}
	f := func(flag telemetry.Field, v float64) *float64 {
		if r.Has(flag) {
			return &v
		}
		return nil
	}
	if r.Has(telemetry.HasIgnition) {
		ign := r.Ignition
		pr.Ignition = &ign
	}
	pr.OdometerM = f(telemetry.HasOdometer, r.OdometerM)
	pr.EngineHours = f(telemetry.HasEngineHours, r.EngineHours)
	pr.FuelLevelL = f(telemetry.HasFuelLitres, r.FuelLitres)
	pr.FuelLevelPct = f(telemetry.HasFuelPercent, r.FuelPercent)
	pr.ExternalVoltageV = f(telemetry.HasExternalVoltage, r.ExternalVoltage)
	pr.BatteryVoltageV = f(telemetry.HasBatteryVoltage, r.BatteryVoltage)
	if r.Has(telemetry.HasRPM) || r.Has(telemetry.HasCoolantTemp) || r.Has(telemetry.HasMIL) || len(r.FaultCodes) > 0 {
		d := &fleetv1.Diagnostics{
			Rpm:          f(telemetry.HasRPM, r.RPM),
			CoolantTempC: f(telemetry.HasCoolantTemp, r.CoolantTempC),
			FaultCodes:   r.FaultCodes,
		}
		if r.Has(telemetry.HasMIL) {
			mil := r.MIL
			d.Mil = &mil
		}
		pr.Diagnostics = d
	}
	if r.Has(telemetry.HasMovement) {
		mv := r.Movement
		pr.Movement = &mv
	}
	if r.Has(telemetry.HasGSMLevel) {
		gsm := uint32(r.GSMLevel)
		pr.GsmLevel = &gsm
	}
	pr.Pdop = f(telemetry.HasPDOP, r.PDOP)
	for _, a := range r.Alarms {
		pr.Alarms = append(pr.Alarms, fleetv1.AlarmKind(a))
	}
	if len(r.IO) > 0 {
		pr.Io = r.IO
	}
	return pr
}

// EncodeBatch encodes records of one vehicle as a protobuf TelemetryBatch.
func EncodeBatch(vehicle string, sent time.Time, recs []telemetry.Record) ([]byte, error) {
	b := &fleetv1.TelemetryBatch{VehicleId: vehicle, SentTime: timestamppb.New(sent)}
	b.Records = make([]*fleetv1.TelemetryRecord, len(recs))
	for i := range recs {
		b.Records[i] = ToRecord(&recs[i])
	}
	return proto.Marshal(b)
}

// Reason names a decode failure for rejection metrics and logs, the same in every service:
// for a whole message too_large, malformed, too_many_records, empty_batch,
// vehicle_mismatch or bad_vehicle_id; for one record of a batch (a RecordError)
// negative_counter, no_device_time, vehicle_mismatch or bad_record; for a record refused
// by telemetry.TimeBounds future_time or too_old.
func Reason(err error) string {
	var re *RecordError
	if errors.As(err, &re) {
		switch {
		case errors.Is(err, telemetry.ErrNegativeQuantity):
			return "negative_counter"
		case errors.Is(err, telemetry.ErrNoDeviceTime):
			return "no_device_time"
		case errors.Is(err, ErrVehicleMismatch):
			return "vehicle_mismatch"
		}
		return "bad_record"
	}
	switch {
	case errors.Is(err, telemetry.ErrFutureTime), errors.Is(err, telemetry.ErrTooOld):
		return telemetry.TimeReason(err)
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrTooManyRecords):
		return "too_many_records"
	case errors.Is(err, ErrEmptyBatch):
		return "empty_batch"
	case errors.Is(err, ErrForeignMsgID):
		return "foreign_msg_id"
	case errors.Is(err, ErrVehicleMismatch):
		return "vehicle_mismatch"
	case errors.Is(err, telemetry.ErrNoVehicle), errors.Is(err, telemetry.ErrBadVehicleID):
		return "bad_vehicle_id"
	}
	return "malformed"
}
