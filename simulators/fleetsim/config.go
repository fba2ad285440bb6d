// Package fleetsim plays a fleet of vehicles with trackers: a seeded road network around
// a city centre, vehicles that drive shifts between depots, customers and fuel stations,
// and trackers that report the way real ones do (interval and heading/distance triggers,
// GPS noise, invalid fixes, coverage gaps sent later as a late batch, duplicate resends).
// Scripted incidents with ground truth let tests score what the services detect.
//
// The generator (Sim) is a pure function of the seed and the simulated clock, so two runs
// with the same seed produce the same records. Fleet.Run drives it in real time (or
// faster) and publishes to NATS JetStream.
package fleetsim

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

// Config describes the simulated fleet. Zero values take the defaults of DefaultConfig.
type Config struct {
	// Protocol is how the trackers reach the platform: ProtocolNATS (default),
	// ProtocolTeltonika, TCP to the gateway at TeltonikaAddr (register Fleet.Devices first),
	// or ProtocolMQTT / ProtocolCoAP to DeviceAddr, each vehicle logging in with its secret
	// from DeviceSecrets (registered in the device registry first).
	Protocol      string
	TeltonikaAddr string
	DeviceAddr    string
	DeviceSecrets map[string]string

	Vehicles int       // number of vehicles
	Seed     int64     // runs are reproducible from the seed
	Center   geo.Point // city centre
	Prefix   string    // vehicle id prefix; ids look like veh-00001

	// Start is the simulated clock's start; zero means the wall clock when Run starts
	// (or when NewSim is called without one).
	Start time.Time
	// Speedup runs the simulated clock this many times faster than the wall clock
	// (1 = real time, as the demo runs). Device times run ahead of the wall clock when
	// Speedup > 1, so combine it with a Start in the past.
	Speedup float64
	// UTCOffset is the local time of the city, which decides shifts and "night".
	// Zero means the offset of the centre's longitude (lon/15 h, rounded).
	UTCOffset time.Duration

	// Tracker reporting. A moving tracker records every MovingInterval and also when the
	// heading changes by HeadingDeltaDeg or the vehicle covered DistanceM since the last
	// record; a parked one (ignition off, standing) every ParkedInterval.
	MovingInterval  time.Duration // default 5s
	ParkedInterval  time.Duration // default 2m
	HeadingDeltaDeg float64       // default 15
	DistanceM       float64       // default 150
	// FixedInterval, when set, overrides all triggers: every vehicle records exactly
	// once per FixedInterval whatever it is doing (load tests, benchmarks).
	FixedInterval time.Duration
	// BatchRecords is how many records a tracker buffers before it sends a packet
	// (default 1: every record is sent at once). Alarm records are always sent at once.
	BatchRecords int

	// Noise and faults of the trackers.
	GPSNoiseM      float64 // standard deviation of GPS noise at HDOP 1 (default 2.5 m)
	InvalidFixProb float64 // chance a record has no valid fix (default 0.003)
	DuplicateProb  float64 // chance a packet is sent twice (default 0.002)
	Tunnels        bool    // ring-road tunnels cut coverage; records are sent later (default true)
	FaultsPerHour  float64 // chance per driving hour of a new OBD-II fault code (default 0.02)

	// Shifts: each vehicle starts its shift at a local hour drawn from
	// [ShiftStartMin, ShiftStartMax) and works ShiftHours (±1 h); outside it the vehicle
	// is parked at its depot overnight. The default 0..24 staggers shifts around the clock
	// (a fleet that always has someone on the road); 6..9 is a day fleet.
	ShiftStartMin, ShiftStartMax float64
	ShiftHours                   float64 // default 9

	// Scenarios adds the scripted incidents (see Incident) when there are enough vehicles.
	Scenarios bool
	// ScenarioStart is the offset from Start of the first incident (default 5m); the
	// next ones follow every ScenarioEvery (default 15m).
	ScenarioStart, ScenarioEvery time.Duration

	// Publishing (Fleet.Run only).
	MaxInFlight int           // unacknowledged JetStream publishes (default 4096)
	Tick        time.Duration // how often the wall-clock loop advances the simulation (default 100ms)
	// SendWallTime stamps packets' sent_time with the wall clock instead of the simulated
	// clock, for end-to-end latency figures (default: true when Speedup is 1).
	SendWallTime *bool
}

// DefaultConfig returns a 100-vehicle fleet in Berlin reporting like typical trackers.
func DefaultConfig() Config {
	return Config{
		Vehicles:        100,
		Seed:            1,
		Center:          geo.Point{Lat: 52.52, Lon: 13.405},
		Prefix:          "veh-",
		Speedup:         1,
		MovingInterval:  5 * time.Second,
		ParkedInterval:  2 * time.Minute,
		HeadingDeltaDeg: 15,
		DistanceM:       150,
		BatchRecords:    1,
		GPSNoiseM:       2.5,
		InvalidFixProb:  0.003,
		DuplicateProb:   0.002,
		Tunnels:         true,
		FaultsPerHour:   0.02,
		ShiftStartMin:   0,
		ShiftStartMax:   24,
		ShiftHours:      9,
		ScenarioStart:   5 * time.Minute,
		ScenarioEvery:   15 * time.Minute,
		MaxInFlight:     4096,
		Tick:            100 * time.Millisecond,
	}
}

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid simulator config")

// normalize fills zero values from the defaults and checks the rest.
func (c *Config) normalize() error {
	d := DefaultConfig()
	if c.Vehicles < 0 || c.Vehicles > 1_000_000 {
		return fmt.Errorf("%w: vehicles %d not in 0..1000000", ErrConfig, c.Vehicles)
	}
	if c.Center == (geo.Point{}) {
		c.Center = d.Center
	}
	if math.IsNaN(c.Center.Lat) || math.IsNaN(c.Center.Lon) || math.Abs(c.Center.Lat) > 80 || math.Abs(c.Center.Lon) > 180 {
		return fmt.Errorf("%w: centre %v (latitude must be within ±80)", ErrConfig, c.Center)
	}
	if c.Prefix == "" {
		c.Prefix = d.Prefix
	}
	switch c.Protocol {
	case "", ProtocolNATS:
		c.Protocol = ProtocolNATS
	case ProtocolTeltonika:
		if c.TeltonikaAddr == "" {
			return fmt.Errorf("%w: protocol teltonika needs the gateway's address", ErrConfig)
		}
	case ProtocolMQTT, ProtocolCoAP:
		if c.DeviceAddr == "" {
			return fmt.Errorf("%w: protocol %s needs the device address", ErrConfig, c.Protocol)
		}
	default:
		return fmt.Errorf("%w: protocol %q (want nats, teltonika, mqtt or coap)", ErrConfig, c.Protocol)
	}
	if c.Speedup <= 0 {
		c.Speedup = 1
	}
	if c.UTCOffset == 0 {
		c.UTCOffset = time.Duration(math.Round(c.Center.Lon/15)) * time.Hour
	}
	def := func(v *time.Duration, dv time.Duration) {
		if *v <= 0 {
			*v = dv
		}
	}
	def(&c.MovingInterval, d.MovingInterval)
	def(&c.ParkedInterval, d.ParkedInterval)
	def(&c.ScenarioStart, d.ScenarioStart)
	def(&c.ScenarioEvery, d.ScenarioEvery)
	def(&c.Tick, d.Tick)
	if c.FixedInterval < 0 {
		return fmt.Errorf("%w: negative fixed interval", ErrConfig)
	}
	if c.HeadingDeltaDeg <= 0 {
		c.HeadingDeltaDeg = d.HeadingDeltaDeg
	}
	if c.DistanceM <= 0 {
		c.DistanceM = d.DistanceM
	}
	if c.BatchRecords <= 0 {
		c.BatchRecords = 1
	}
	if c.BatchRecords > maxBatch {
		return fmt.Errorf("%w: batch of %d records > %d", ErrConfig, c.BatchRecords, maxBatch)
	}
	if c.GPSNoiseM < 0 || c.InvalidFixProb < 0 || c.DuplicateProb < 0 || c.FaultsPerHour < 0 {
		return fmt.Errorf("%w: negative noise or probability", ErrConfig)
	}
	if c.ShiftStartMax <= c.ShiftStartMin {
		c.ShiftStartMin, c.ShiftStartMax = d.ShiftStartMin, d.ShiftStartMax
	}
	if c.ShiftHours <= 0 || c.ShiftHours > 23 {
		c.ShiftHours = d.ShiftHours
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	return nil
}

// VehicleID returns the id of vehicle i (0-based) for prefix: prefix + 5-digit number.
func VehicleID(prefix string, i int) string { return fmt.Sprintf("%s%05d", prefix, i+1) }
