package tracking

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

// Domain errors; the gRPC edge maps them to status codes.
var (
	ErrNotFound      = errors.New("vehicle not found")
	ErrAlreadyExists = errors.New("vehicle already registered")
	ErrInvalid       = errors.New("invalid argument")
)

// MetaDeviceModel is the registry metadata key naming a vehicle's tracker model; it
// selects the model's filter profile (Config.ModelFilters).
const MetaDeviceModel = "device_model"

// Info is what the registry knows of a vehicle.
type Info struct {
	ID         string
	Name       string
	Plate      string
	Groups     []string
	Metadata   map[string]string
	Registered bool // false for a vehicle that sent data but was never registered
}

// InGroup reports whether the vehicle belongs to group g.
func (i *Info) InGroup(g string) bool { return slices.Contains(i.Groups, g) }

// Vehicle is identity plus live state. State is nil for a registered vehicle that never
// sent data.
type Vehicle struct {
	Info  Info
	State *State
}

// Status returns the vehicle's status, never-seen when it has no state.
func (v *Vehicle) Status() Status {
	if v.State == nil {
		return StatusNeverSeen
	}
	return v.State.Status
}

// TrackPoint is one history entry: an accepted fix of a vehicle.
type TrackPoint struct {
	VehicleID string
	Fix
}

// Batch is what one processed bus batch writes: the new states of the vehicles it touched
// and the fixes it accepted. Writing the same Batch twice leaves the store as after once.
type Batch struct {
	States    []*State
	Points    []TrackPoint
	Removed   []TrackPoint  // fixes to take out of the history again (retracted spikes), after Points
	Retention time.Duration // history older than now minus this is dropped
	Now       time.Time
}

// Nearby is a nearest-search result.
type Nearby struct {
	Vehicle   Vehicle
	DistanceM float64
}

// NearestQuery asks for the K vehicles nearest to Point within RadiusM (0: any distance)
// that Accept (nil: all) lets through. Only vehicles with a fix take part.
type NearestQuery struct {
	Point   geo.Point
	K       int
	RadiusM float64
	Accept  func(*Vehicle) bool
}

// Store keeps vehicle states, the registry and the history. Implementations: MemoryStore
// and RedisStore; both pass the conformance suite in store_test.go.
type Store interface {
	// Write persists one batch. It is idempotent.
	Write(ctx context.Context, b Batch) error
	// States returns the stored states of ids (nil entries for unknown vehicles).
	States(ctx context.Context, ids []string) ([]*State, error)
	// Vehicles returns info and state for ids; unknown ids are left out.
	Vehicles(ctx context.Context, ids []string) ([]Vehicle, error)
	// IDs returns up to limit vehicle ids (registered or seen) greater than after, sorted.
	IDs(ctx context.Context, after string, limit int) ([]string, error)
	// Count returns how many vehicles are registered or seen.
	Count(ctx context.Context) (int, error)
	// Register adds info to the registry; ErrAlreadyExists when registered.
	Register(ctx context.Context, info Info) error
	// Update replaces a registered vehicle's info; ErrNotFound when not registered.
	Update(ctx context.Context, info Info) error
	// Nearest returns the nearest vehicles by great-circle distance, nearest first. The
	// results are read-only: they may share memory with the store.
	Nearest(ctx context.Context, q NearestQuery) ([]Nearby, error)
	// Track returns a vehicle's fixes with from <= device time <= to, ordered by time.
	Track(ctx context.Context, vehicle string, from, to time.Time) ([]Fix, error)
	// Delete removes vehicles: state, registry entry, position and history (every fix
	// with a device time from histFrom to histTo; the memory store keeps history with the
	// vehicle and drops all of it). Unknown ids are ignored.
	Delete(ctx context.Context, ids []string, histFrom, histTo time.Time) error
}
