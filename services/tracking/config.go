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

	// MaxFutureSkew: a record whose device time is further than this ahead of the server
	// clock has a broken clock; its position is discarded (default 5 min).
	MaxFutureSkew time.Duration
	// MaxSpeedKmh: a fix implying a faster move from the previous accepted fix is a
	// "teleport" and its position is discarded (default 300 km/h).
	MaxSpeedKmh float64
	// TeleportConfirm: after this many consecutive teleports that agree with each other
	// (the vehicle really is elsewhere, e.g. carried on a ferry or the first fix was the bad
	// one) the new position is accepted (default 3).
	TeleportConfirm int
	// DriftMinDistanceM: while stopped, a jump shorter than this is GPS drift and the
	// previous coordinates are kept (default 30 m).
	DriftMinDistanceM float64
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

	// Trips holds the trip segmentation thresholds.
	Trips TripConfig
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
		AckWait:           30 * time.Second,
		MaxFutureSkew:     5 * time.Minute,
		MaxSpeedKmh:       300,
		TeleportConfirm:   3,
		DriftMinDistanceM: 30,
		MovingSpeedKmh:    5,
		IdleAfter:         3 * time.Minute,
		OfflineAfter:      10 * time.Minute,
		SweepInterval:     15 * time.Second,
		HistoryRetention:  30 * 24 * time.Hour,
		RecentFixes:       64,
		Trips:             DefaultTripConfig(),
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
	case c.MaxFutureSkew <= 0:
		return fmt.Errorf("%w: MaxFutureSkew must be positive", ErrBadConfig)
	case c.MaxSpeedKmh <= 0:
		return fmt.Errorf("%w: MaxSpeedKmh must be positive", ErrBadConfig)
	case c.TeleportConfirm < 1:
		return fmt.Errorf("%w: TeleportConfirm must be at least 1", ErrBadConfig)
	case c.DriftMinDistanceM < 0:
		return fmt.Errorf("%w: DriftMinDistanceM must not be negative", ErrBadConfig)
	case c.MovingSpeedKmh <= 0:
		return fmt.Errorf("%w: MovingSpeedKmh must be positive", ErrBadConfig)
	case c.OfflineAfter <= 0 || c.SweepInterval <= 0 || c.IdleAfter < 0:
		return fmt.Errorf("%w: OfflineAfter and SweepInterval must be positive", ErrBadConfig)
	case c.HistoryRetention <= 0:
		return fmt.Errorf("%w: HistoryRetention must be positive", ErrBadConfig)
	case c.RecentFixes < 2:
		return fmt.Errorf("%w: RecentFixes must be at least 2", ErrBadConfig)
	case c.Trips.MovingSpeedKmh <= 0 || c.Trips.MaxGap <= 0:
		return fmt.Errorf("%w: trip thresholds must be positive", ErrBadConfig)
	}
	return nil
}
