// Package fuel turns a vehicle's fuel-level readings into refuels and suspected drains.
//
// It follows what the commercial platforms document rather than the two-readings
// threshold of the open-source trackers: the level is calibrated (sensor value → litres),
// median-filtered, judged only while the vehicle stands still (sloshing while driving
// would otherwise look like theft), and a change is measured between two stable levels,
// corrected for what the engine burns meanwhile. Adjacent changes of the same kind are
// merged. The package knows nothing of NATS, protobuf or stores: it is a pure function of
// a per-vehicle State and the next Reading, so it can be replayed and tested exactly.
package fuel

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// DefaultSensorKey is the IO element that carries the raw (uncalibrated) fuel sensor
// value when a calibration table is set.
const DefaultSensorKey = "fuel_raw"

// MaxCalibrationPoints bounds a calibration table.
const MaxCalibrationPoints = 256

// CalPoint maps one raw sensor value to litres in the tank.
type CalPoint struct {
	Raw    float64 `json:"raw"`
	Litres float64 `json:"litres"`
}

// Profile describes a vehicle's tank.
type Profile struct {
	// CapacityL is the tank capacity in litres; 0 means unknown (levels above it can then
	// not be checked, and percent readings cannot be converted).
	CapacityL float64 `json:"capacity_l"`
	// Calibration maps raw sensor values to litres, by piecewise-linear interpolation.
	// Empty means the device already reports litres (or percent).
	Calibration []CalPoint `json:"calibration,omitempty"`
	// SensorKey is the IO element holding the raw value (default DefaultSensorKey).
	SensorKey string `json:"sensor_key,omitempty"`
	// StepL is the sensor's resolution in litres (a van reporting whole percent of 80 L
	// has 0.8 L steps); 0 means unknown, learned from the first readings.
	StepL float64 `json:"step_l,omitempty"`
	// LagSec is the sensor's response time in seconds (a damped sensor follows a change
	// with a time constant of up to 2 minutes); 0 means unknown or none.
	LagSec float64 `json:"lag_sec,omitempty"`
}

// Profile errors.
var (
	ErrBadCapacity    = errors.New("tank capacity must be a finite number >= 0")
	ErrBadCalibration = errors.New("calibration table invalid")
	ErrBadProfile     = errors.New("fuel profile invalid")
)

// MaxLagSec bounds a sensor's lag: a sensor slower than 10 minutes cannot tell a
// refuel's end from a drive's start.
const MaxLagSec = 600

// Normalize validates p and returns it with the table sorted by raw value and the
// sensor key defaulted.
func (p Profile) Normalize() (Profile, error) {
	if math.IsNaN(p.CapacityL) || math.IsInf(p.CapacityL, 0) || p.CapacityL < 0 {
		return p, ErrBadCapacity
	}
	if !finite(p.StepL) || p.StepL < 0 || p.CapacityL > 0 && p.StepL > p.CapacityL/10 {
		return p, fmt.Errorf("%w: sensor step %v L", ErrBadProfile, p.StepL)
	}
	if !finite(p.LagSec) || p.LagSec < 0 || p.LagSec > MaxLagSec {
		return p, fmt.Errorf("%w: sensor lag %v s (want 0..%d)", ErrBadProfile, p.LagSec, MaxLagSec)
	}
	if len(p.Calibration) == 1 || len(p.Calibration) > MaxCalibrationPoints {
		return p, fmt.Errorf("%w: %d points (need 2..%d)", ErrBadCalibration, len(p.Calibration), MaxCalibrationPoints)
	}
	cal := append([]CalPoint(nil), p.Calibration...)
	sort.Slice(cal, func(i, j int) bool { return cal[i].Raw < cal[j].Raw })
	for i, c := range cal {
		if !finite(c.Raw) || !finite(c.Litres) || c.Litres < 0 {
			return p, fmt.Errorf("%w: point %d (%v → %v)", ErrBadCalibration, i, c.Raw, c.Litres)
		}
		if i > 0 {
			if c.Raw == cal[i-1].Raw {
				return p, fmt.Errorf("%w: raw value %v appears twice", ErrBadCalibration, c.Raw)
			}
			// A level sensor reads more for more fuel; a table that goes down would turn
			// a refuel into a drain.
			if c.Litres < cal[i-1].Litres {
				return p, fmt.Errorf("%w: litres decrease between raw %v and %v", ErrBadCalibration, cal[i-1].Raw, c.Raw)
			}
		}
		if p.CapacityL > 0 && c.Litres > p.CapacityL*1.05 {
			return p, fmt.Errorf("%w: %v L exceeds the %v L tank", ErrBadCalibration, c.Litres, p.CapacityL)
		}
	}
	p.Calibration = cal
	if len(cal) == 0 {
		p.Calibration = nil
	}
	if p.SensorKey == "" {
		p.SensorKey = DefaultSensorKey
	}
	return p, nil
}

// Litres converts a raw sensor value with the (normalized) calibration table. Values
// outside the table are clamped to its end points: extrapolating a tank's shape beyond
// what was measured invents fuel.
func (p Profile) Litres(raw float64) float64 {
	cal := p.Calibration
	if len(cal) == 0 {
		return raw
	}
	if raw <= cal[0].Raw {
		return cal[0].Litres
	}
	if raw >= cal[len(cal)-1].Raw {
		return cal[len(cal)-1].Litres
	}
	i := sort.Search(len(cal), func(i int) bool { return cal[i].Raw >= raw })
	a, b := cal[i-1], cal[i]
	f := (raw - a.Raw) / (b.Raw - a.Raw)
	return a.Litres + f*(b.Litres-a.Litres)
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
