// Package telemetry defines the tracker record as every Fleetwire service sees it,
// independent of how it travelled (protobuf or JSON over NATS, a test table, a replay).
//
// Services depend on this package, never on generated protobuf types: the conversion
// happens once, at the edge, in package wire.
package telemetry

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Field flags mark which optional measurements a record carries. A tracker that has no
// fuel sensor sends no fuel level; zero litres is a real reading and must not be confused
// with "absent".
type Field uint16

const (
	HasIgnition Field = 1 << iota
	HasOdometer
	HasEngineHours
	HasFuelLitres
	HasFuelPercent
	HasExternalVoltage
	HasBatteryVoltage
	HasRPM
	HasCoolantTemp
	HasMIL
	HasMovement
	HasGSMLevel
	HasPDOP
)

// AlarmKind is an alarm a device raises by itself. The values match fleet.v1.AlarmKind.
type AlarmKind uint8

const (
	AlarmUnspecified AlarmKind = iota
	AlarmTow
	AlarmGNSSJamming
	AlarmGSMJamming
	AlarmPowerCut
	AlarmUnauthorizedIgnition
	AlarmDoor
	AlarmPanic
	AlarmTamper
	AlarmCrash
	AlarmLowBattery
	alarmKindCount
)

var alarmNames = [...]string{
	"unspecified", "tow", "gnss_jamming", "gsm_jamming", "power_cut",
	"unauthorized_ignition", "door", "panic", "tamper", "crash", "low_battery",
}

func (k AlarmKind) String() string {
	if int(k) < len(alarmNames) {
		return alarmNames[k]
	}
	return fmt.Sprintf("alarm(%d)", k)
}

// Valid reports whether k is a known, specified alarm kind.
func (k AlarmKind) Valid() bool { return k > AlarmUnspecified && k < alarmKindCount }

// Record is one tracker record: a position fix plus whatever the device measured at
// that instant. Units are SI-ish and spelled out in names where they could be doubted.
type Record struct {
	VehicleID  string
	DeviceTime time.Time // when the device took the measurement
	Sequence   uint64    // device's own counter; with DeviceTime it identifies a record

	Lat, Lon   float64 // WGS84 degrees
	AltitudeM  float64
	SpeedKmh   float64
	HeadingDeg float64
	Satellites uint32
	HDOP       float64
	FixValid   bool

	Fields          Field // which of the optional values below are present
	Ignition        bool
	OdometerM       float64
	EngineHours     float64
	FuelLitres      float64
	FuelPercent     float64
	ExternalVoltage float64 // volts
	BatteryVoltage  float64 // volts
	RPM             float64
	CoolantTempC    float64
	MIL             bool     // malfunction indicator lamp ("check engine")
	FaultCodes      []string // active OBD-II DTCs as reported, e.g. "P0301"
	Movement        bool     // the device's accelerometer senses movement (GNSS-independent)
	GSMLevel        uint8    // cellular signal 0 (none) .. 5 (best)
	PDOP            float64  // 3D dilution of precision

	Alarms []AlarmKind
	IO     map[string]float64 // other IO elements, by name or numeric id

	// Set by the platform, not the device.
	SentTime     time.Time // when the device sent the batch holding this record
	ReceivedTime time.Time // when the platform stored it (JetStream timestamp): stable on redelivery
	StreamSeq    uint64    // JetStream stream sequence of the message that carried it
}

// Has reports whether all flags in f are present.
func (r *Record) Has(f Field) bool { return r.Fields&f == f }

// Set marks f present.
func (r *Record) Set(f Field) { r.Fields |= f }

// HasAlarm reports whether the record carries any device alarm.
func (r *Record) HasAlarm() bool { return len(r.Alarms) > 0 }

// Position errors. A record whose position fails is not necessarily useless: its alarms,
// ignition and counters still count (see the tracking filter rules).
var (
	ErrInvalidFix       = errors.New("device reports no valid fix")
	ErrNaNCoordinate    = errors.New("coordinate is NaN or infinite")
	ErrOutOfRange       = errors.New("coordinate out of range")
	ErrNullIsland       = errors.New("coordinate is (0,0)")
	ErrNoVehicle        = errors.New("vehicle id missing")
	ErrBadVehicleID     = errors.New("vehicle id has characters not allowed in a subject token")
	ErrNoDeviceTime     = errors.New("device time missing")
	ErrNegativeQuantity = errors.New("negative counter")
)

// CheckPosition classifies the record's position. It returns nil for a usable fix.
func (r *Record) CheckPosition() error {
	if !finite(r.Lat) || !finite(r.Lon) {
		return ErrNaNCoordinate
	}
	if r.Lat < -90 || r.Lat > 90 || r.Lon < -180 || r.Lon > 180 {
		return fmt.Errorf("%w: lat %.6f lon %.6f", ErrOutOfRange, r.Lat, r.Lon)
	}
	if !r.FixValid {
		return ErrInvalidFix
	}
	if r.Lat == 0 && r.Lon == 0 {
		return ErrNullIsland
	}
	return nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// MaxVehicleIDLen bounds vehicle ids; they are NATS subject tokens and Redis key parts.
const MaxVehicleIDLen = 64

// ValidVehicleID reports whether id can be used as a subject token: 1..64 characters from
// [A-Za-z0-9_-]. Dots, wildcards and whitespace would let one device address another's
// subjects, so they are refused everywhere.
func ValidVehicleID(id string) error {
	if id == "" {
		return ErrNoVehicle
	}
	if len(id) > MaxVehicleIDLen {
		return fmt.Errorf("%w: longer than %d", ErrBadVehicleID, MaxVehicleIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: %q", ErrBadVehicleID, id)
		}
	}
	return nil
}

// LoadTestPrefix starts the id of every load-test vehicle (fleetsim load). Ids under it
// are reserved: the services keep such vehicles out of the live fleet (no alerts, no
// commands, not listed, removed once they stop reporting), so a load test against a
// production system leaves nothing behind (docs/simulator.md, load tests).
const LoadTestPrefix = "loadtest-"

// IsLoadTest reports whether id is a load-test vehicle's.
func IsLoadTest(id string) bool { return strings.HasPrefix(id, LoadTestPrefix) }
