// Package tracking keeps the live picture of the fleet: the last trustworthy state of every
// vehicle (position, status, odometer, counters), its history, its trips and stops, and the
// nearest-vehicle search a dispatcher relies on.
//
// The domain (state.go, trips.go, index.go) works on telemetry.Record and knows neither
// NATS nor protobuf; bus.go and grpc.go are the edges that convert.
package tracking

import (
	"errors"
	"fmt"
	"time"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// Config holds the thresholds of the filter rules, the status rules and trip segmentation.
// DefaultConfig documents every default; docs/tracking.md explains the rules.
type Config struct {
	// Partitions of the telemetry stream this instance consumes; nil means all of them.
	Partitions []int
	// Rebuild re-reads the retained stream from its start at start-up (in-memory state).
	Rebuild bool
	// AckWait: messages an instance fetched but did not acknowledge (it was stopped or
	// crashed) are redelivered after this long (default 30 s).
	AckWait time.Duration

	// RecordTime: a record whose device time is further ahead of, or behind, the time the
	// stream stored it than these bounds has a broken clock; its position is discarded
	// (defaults 5 min ahead, 30 days behind: telemetry.TimeBounds, docs/protocol.md).
	RecordTime telemetry.TimeBounds
	// Filter holds the GPS filter thresholds of trackers without a profile of their own.
	Filter FilterConfig
	// ModelFilters holds per-device-model filter profiles, keyed by the registry metadata
	// value "device_model" (see docs/tracking.md); a model without one uses Filter.
	ModelFilters map[string]FilterConfig
	// MovingSpeedKmh: at or above this reported speed a vehicle is moving (default 5 km/h).
	MovingSpeedKmh float64
	// IdleAfter: not moving with ignition on for longer than this is "idle" (default 3 min).
	IdleAfter time.Duration
	// OfflineAfter: no record received for longer than this is "offline" (default 10 min).
	OfflineAfter time.Duration
	// SweepInterval: how often Run looks for vehicles that went offline (default 15 s).
	SweepInterval time.Duration
	// HistoryRetention: how long fixes are kept for tracks and trips (default 30 days).
	HistoryRetention time.Duration
	// RecentFixes: how many recent records per vehicle are remembered for duplicate
	// detection and for fitting late fixes into the odometer (default 64).
	RecentFixes int
	// ExportPage: how much history ExportTrack reads and sends at once (0: one hour, about
	// 3,600 fixes of a vehicle reporting every second); an export holds one page in memory.
	ExportPage time.Duration

	// Trips holds the trip segmentation thresholds.
	Trips TripConfig
	// GroupTrips holds per-group trip thresholds, keyed by registry group. A vehicle uses
	// the first of its groups (in registry order) that has an entry, else Trips.
	GroupTrips map[string]TripConfig
}

// FilterConfig holds the thresholds of the GPS filter rules for one kind of tracker. The
// names follow Traccar's filter.* keys where one exists (docs/tracking.md has the table).
type FilterConfig struct {
	// MinSatellites: a fix from fewer satellites is discarded (default 3, the fewest a 2-D
	// fix needs; fixes from 0–2 satellites are typically 100–3 000 m off). A record with 0
	// satellites and no HDOP is taken as "not reported" and not judged. 0 disables.
	MinSatellites uint32
	// MaxHDOP: a fix with a larger horizontal dilution of precision is discarded (default
	// 10: above it the geometry of the satellites makes errors of hundreds of metres
	// common). 0 disables.
	MaxHDOP float64
	// MaxPDOP: the same for the 3-D dilution, when the tracker reports it (default 15;
	// PDOP is always at least HDOP). 0 disables.
	MaxPDOP float64
	// MaxSpeedKmh: a fix implying a faster move from the last accepted fix is a teleport
	// (default 300 km/h, Traccar's filter.maxSpeed).
	MaxSpeedKmh float64
	// SpeedTolerance and JumpSlackM: within SpeedCheckWindow, a jump longer than the
	// reported speed explains — more than max(speed before, speed after) × time ×
	// SpeedTolerance + JumpSlackM — is suspect: a reported speed is measured by Doppler
	// and stays right when the position is wrong (defaults 1.5 and 100 m: speed changes
	// within an interval, and the few tens of metres good fixes are off). SpeedTolerance 0
	// disables the check, for trackers that report no speed.
	SpeedTolerance float64
	JumpSlackM     float64
	// SpeedCheckWindow: the reported-speed check applies to fixes at most this far apart
	// (default 2 min); over longer gaps the vehicle may have driven faster in between.
	SpeedCheckWindow time.Duration
	// TeleportConfirm: a suspect fix is held back until the next fix decides: back near
	// the last accepted fix (a jump and return, A → B → A) rejects it as a spike, whatever
	// the interval; this many consecutive suspect fixes that agree with each other are
	// accepted together (the vehicle really is there, or the earlier fix was the bad one)
	// (default 2).
	TeleportConfirm int
	// DriftMinDistanceM: while standing (previous and current speed below
	// MovingSpeedKmh), a jump shorter than this is GPS drift and the previous coordinates
	// are kept (default 30 m, Traccar's filter.distance / minError).
	DriftMinDistanceM float64
	// Static: with the ignition off and no movement (the accelerometer's flag, or, when
	// the tracker has none, a reported speed below MovingSpeedKmh) the parked position is
	// held and no distance accrues (default true, Traccar's filter.static).
	Static bool
	// StaticReleaseM: TeleportConfirm consecutive parked fixes that agree with each other
	// and lie further than this from the held position move it without adding distance:
	// the vehicle was carried (tow truck, ferry) by a tracker without a movement sensor
	// (default 500 m).
	StaticReleaseM float64
}

// DefaultFilterConfig returns the documented filter defaults.
func DefaultFilterConfig() FilterConfig {
	return FilterConfig{
		MinSatellites:     3,
		MaxHDOP:           10,
		MaxPDOP:           15,
		MaxSpeedKmh:       300,
		SpeedTolerance:    1.5,
		JumpSlackM:        100,
		SpeedCheckWindow:  2 * time.Minute,
		TeleportConfirm:   2,
		DriftMinDistanceM: 30,
		Static:            true,
		StaticReleaseM:    500,
	}
}

func (f FilterConfig) validate(name string) error {
	switch {
	case f.MaxSpeedKmh <= 0:
		return fmt.Errorf("%w: filter %s: MaxSpeedKmh must be positive", ErrBadConfig, name)
	case f.TeleportConfirm < 1:
		return fmt.Errorf("%w: filter %s: TeleportConfirm must be at least 1", ErrBadConfig, name)
	case f.TeleportConfirm > maxPending:
		return fmt.Errorf("%w: filter %s: TeleportConfirm must be at most %d", ErrBadConfig, name, maxPending)
	case f.DriftMinDistanceM < 0 || f.JumpSlackM < 0 || f.StaticReleaseM < 0:
		return fmt.Errorf("%w: filter %s: distances must not be negative", ErrBadConfig, name)
	case f.MaxHDOP < 0 || f.MaxPDOP < 0 || f.SpeedTolerance < 0 || f.SpeedCheckWindow < 0:
		return fmt.Errorf("%w: filter %s: thresholds must not be negative", ErrBadConfig, name)
	}
	return nil
}

func (c TripConfig) validate(name string) error {
	switch {
	case c.MovingSpeedKmh <= 0 || c.MaxGap <= 0:
		return fmt.Errorf("%w: trips %s: MovingSpeedKmh and MaxGap must be positive", ErrBadConfig, name)
	case c.MinParking < 0 || c.MinDistanceM < 0 || c.MinDuration < 0:
		return fmt.Errorf("%w: trips %s: thresholds must not be negative", ErrBadConfig, name)
	}
	return nil
}

// TripsFor returns the trip thresholds of a vehicle in groups.
func (c Config) TripsFor(groups []string) TripConfig {
	for _, g := range groups {
		if tc, ok := c.GroupTrips[g]; ok {
			return tc
		}
	}
	return c.Trips
}

// TripConfig holds the thresholds of trip segmentation (see docs/tracking.md).
type TripConfig struct {
	// MovingSpeedKmh: a fix at or above this speed is motion (default 5 km/h).
	MovingSpeedKmh float64
	// MinParking: standing still at least this long ends a trip (default 5 min).
	MinParking time.Duration
	// MaxGap: no fix for longer than this is a stop, wherever the vehicle was (default 30 min).
	MaxGap time.Duration
	// MinDistanceM: shorter trips are not trips; the stops around them merge (default 300 m).
	MinDistanceM float64
	// MinDuration: trips shorter in time are not trips either (default 60 s).
	MinDuration time.Duration
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		AckWait:          30 * time.Second,
		RecordTime:       telemetry.TimeBounds{}.WithDefaults(),
		Filter:           DefaultFilterConfig(),
		MovingSpeedKmh:   5,
		IdleAfter:        3 * time.Minute,
		OfflineAfter:     10 * time.Minute,
		SweepInterval:    15 * time.Second,
		HistoryRetention: 30 * 24 * time.Hour,
		RecentFixes:      64,
		Trips:            DefaultTripConfig(),
	}
}

// DefaultTripConfig returns the documented trip thresholds.
func DefaultTripConfig() TripConfig {
	return TripConfig{
		MovingSpeedKmh: 5,
		MinParking:     5 * time.Minute,
		MaxGap:         30 * time.Minute,
		MinDistanceM:   300,
		MinDuration:    time.Minute,
	}
}

// ErrBadConfig is returned by New for a configuration that cannot work.
var ErrBadConfig = errors.New("bad tracking config")

func (c Config) validate() error {
	switch {
	case c.RecordTime.MaxAhead <= 0 || c.RecordTime.MaxBehind <= 0:
		return fmt.Errorf("%w: RecordTime bounds must be positive", ErrBadConfig)
	case c.MovingSpeedKmh <= 0:
		return fmt.Errorf("%w: MovingSpeedKmh must be positive", ErrBadConfig)
	case c.OfflineAfter <= 0 || c.SweepInterval <= 0 || c.IdleAfter < 0:
		return fmt.Errorf("%w: OfflineAfter and SweepInterval must be positive", ErrBadConfig)
	case c.HistoryRetention <= 0:
		return fmt.Errorf("%w: HistoryRetention must be positive", ErrBadConfig)
	case c.RecentFixes < 2:
		return fmt.Errorf("%w: RecentFixes must be at least 2", ErrBadConfig)
	case c.ExportPage < 0:
		return fmt.Errorf("%w: ExportPage must not be negative", ErrBadConfig)
	}
	if err := c.Filter.validate("default"); err != nil {
		return err
	}
	for m, f := range c.ModelFilters {
		if err := f.validate(m); err != nil {
			return err
		}
	}
	if err := c.Trips.validate("default"); err != nil {
		return err
	}
	for g, tc := range c.GroupTrips {
		if err := tc.validate(g); err != nil {
			return err
		}
	}
	return nil
}
