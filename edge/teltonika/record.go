package teltonika

import (
	"strconv"
	"strings"
	"time"

	"github.com/fleetwire/fleetwire/edge/teltonika/codec"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// Teltonika IO element ids the gateway maps onto record fields (FMB/FMC/FMM numbering;
// the table with units is in docs/protocol-teltonika.md).
const (
	ioOdometer       = 16  // total odometer, m
	ioGSMSignal      = 21  // 0..5
	ioSpeed          = 24  // GNSS speed, km/h
	ioCoolantTemp    = 32  // OBD coolant temperature, °C (signed)
	ioEngineRPM      = 36  // OBD engine RPM
	ioOBDFuelLevel   = 48  // OBD fuel level, %
	ioExternalV      = 66  // mV
	ioBatteryV       = 67  // mV
	ioGNSSStatus     = 69  // 0 off, 1 on with fix, 2 on without fix, 3 sleep
	ioCANFuelLitres  = 84  // CAN fuel level, 0.1 l
	ioCANEngineRPM   = 85  // CAN engine RPM
	ioFuelLevelPct   = 89  // CAN (LVCAN) fuel level, %
	ioPDOP           = 181 // × 10
	ioHDOP           = 182 // × 10
	ioIgnition       = 239
	ioMovement       = 240
	ioTow            = 246
	ioCrash          = 247
	ioJamming        = 249 // 0 none, 1 warning, 2 critical
	ioUnplug         = 252
	ioFaultCodes     = 281 // NX, comma-separated DTCs
	gnssStatusHasFix = 1
)

// toRecord maps one AVL record of vehicle onto the platform's record. Elements the
// platform has a field for fill it; the digital inputs and outputs, the GNSS status and
// the jamming level are kept in IO under their numeric id as well as any element the
// gateway does not know, so nothing a device reports is dropped (up to wire.MaxIOEntries).
// Variable-length elements other than the fault codes have no numeric value and are not
// kept.
func toRecord(vehicle string, in *codec.Record, r *telemetry.Record) {
	*r = telemetry.Record{
		VehicleID:  vehicle,
		DeviceTime: time.UnixMilli(in.TimestampMs).UTC(),
		Lat:        float64(in.Lat) / 1e7,
		Lon:        float64(in.Lon) / 1e7,
		AltitudeM:  float64(in.Altitude),
		HeadingDeg: float64(in.Angle),
		Satellites: uint32(in.Satellites),
		SpeedKmh:   float64(in.Speed),
		// Without a fix a device repeats its last coordinates with zero satellites.
		FixValid: in.Satellites > 0 && (in.Lat != 0 || in.Lon != 0),
	}
	alarm := func(k telemetry.AlarmKind) {
		for _, a := range r.Alarms {
			if a == k {
				return
			}
		}
		r.Alarms = append(r.Alarms, k)
	}
	raw := func(id uint16, v float64) {
		if r.IO == nil {
			r.IO = make(map[string]float64, 4)
		}
		if len(r.IO) < wire.MaxIOEntries {
			r.IO[strconv.Itoa(int(id))] = v
		}
	}
	for _, e := range in.IO {
		if e.Size == 0 {
			switch e.ID {
			case ioFaultCodes:
				for _, c := range strings.Split(string(e.Raw), ",") {
					if c = strings.TrimSpace(c); c != "" && len(r.FaultCodes) < wire.MaxFaultCodes {
						r.FaultCodes = append(r.FaultCodes, c)
					}
				}
			}
			continue
		}
		v := float64(e.Value)
		switch e.ID {
		case ioIgnition:
			r.Ignition = e.Value != 0
			r.Set(telemetry.HasIgnition)
		case ioMovement:
			r.Movement = e.Value != 0
			r.Set(telemetry.HasMovement)
		case ioGSMSignal:
			r.GSMLevel = uint8(min(e.Value, 5))
			r.Set(telemetry.HasGSMLevel)
		case ioExternalV:
			r.ExternalVoltage = v / 1000
			r.Set(telemetry.HasExternalVoltage)
		case ioBatteryV:
			r.BatteryVoltage = v / 1000
			r.Set(telemetry.HasBatteryVoltage)
		case ioOdometer:
			r.OdometerM = v
			r.Set(telemetry.HasOdometer)
		case ioFuelLevelPct, ioOBDFuelLevel:
			r.FuelPercent = v
			r.Set(telemetry.HasFuelPercent)
		case ioCANFuelLitres:
			r.FuelLitres = v / 10
			r.Set(telemetry.HasFuelLitres)
		case ioEngineRPM, ioCANEngineRPM:
			r.RPM = v
			r.Set(telemetry.HasRPM)
		case ioCoolantTemp:
			r.CoolantTempC = float64(signed(e))
			r.Set(telemetry.HasCoolantTemp)
		case ioSpeed:
			r.SpeedKmh = v
		case ioPDOP:
			r.PDOP = v / 10
			r.Set(telemetry.HasPDOP)
		case ioHDOP:
			r.HDOP = v / 10
		case ioGNSSStatus:
			if e.Value != gnssStatusHasFix {
				r.FixValid = false
			}
			raw(e.ID, v)
		case ioJamming:
			if e.Value > 0 {
				alarm(telemetry.AlarmGNSSJamming)
			}
			raw(e.ID, v)
		case ioTow:
			if e.Value != 0 {
				alarm(telemetry.AlarmTow)
			}
		case ioUnplug:
			if e.Value != 0 {
				alarm(telemetry.AlarmPowerCut)
			}
		case ioCrash:
			if e.Value != 0 {
				alarm(telemetry.AlarmCrash)
			}
		default:
			raw(e.ID, v) // digital inputs and outputs, and every element without a field
		}
	}
}

// signed reads a fixed-size value as two's complement of its size.
func signed(e codec.IO) int64 {
	switch e.Size {
	case 1:
		return int64(int8(e.Value))
	case 2:
		return int64(int16(e.Value))
	case 4:
		return int64(int32(e.Value))
	}
	return int64(e.Value)
}
