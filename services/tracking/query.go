package tracking

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// The queries behind the gRPC API, in domain terms.

// Vehicle returns one vehicle; ErrNotFound when it is neither registered nor seen.
func (s *Service) Vehicle(ctx context.Context, id string) (Vehicle, error) {
	if err := telemetry.ValidVehicleID(id); err != nil {
		return Vehicle{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	vs, err := s.store.Vehicles(ctx, []string{id})
	if err != nil {
		return Vehicle{}, err
	}
	if len(vs) == 0 {
		return Vehicle{}, fmt.Errorf("vehicle %s: %w", id, ErrNotFound)
	}
	return vs[0], nil
}

// ListFilter selects vehicles for ListVehicles.
type ListFilter struct {
	Group    string
	Statuses []Status
}

func (f ListFilter) empty() bool { return f.Group == "" && len(f.Statuses) == 0 }

// match leaves load-test vehicles out of every list and search: they are not the live
// fleet (telemetry.IsLoadTest; docs/simulator.md, load tests).
func (f ListFilter) match(v *Vehicle) bool {
	if telemetry.IsLoadTest(v.Info.ID) {
		return false
	}
	if f.Group != "" && !v.Info.InGroup(f.Group) {
		return false
	}
	return len(f.Statuses) == 0 || slices.Contains(f.Statuses, v.Status())
}

const listChunk = 500

// List returns up to size vehicles after the id after, ordered by id, the id to continue
// from ("" on the last page) and how many vehicles match in all.
func (s *Service) List(ctx context.Context, f ListFilter, after string, size int) ([]Vehicle, string, int, error) {
	var (
		page []Vehicle
		next string
		cur  = after
	)
scan:
	for {
		ids, err := s.store.IDs(ctx, cur, listChunk)
		if err != nil {
			return nil, "", 0, err
		}
		if len(ids) == 0 {
			break
		}
		cur = ids[len(ids)-1]
		vs, err := s.store.Vehicles(ctx, ids)
		if err != nil {
			return nil, "", 0, err
		}
		for i := range vs {
			if !f.match(&vs[i]) {
				continue
			}
			if len(page) == size {
				next = page[len(page)-1].Info.ID
				break scan
			}
			page = append(page, vs[i])
		}
		if len(ids) < listChunk {
			break
		}
	}
	var total int
	var err error
	switch {
	case f.empty():
		total, err = s.store.Count(ctx)
		if err == nil {
			var lt int
			lt, err = s.countLoadTest(ctx)
			total -= lt
		}
	case after == "" && next == "":
		total = len(page)
	default:
		// With filters the total needs a scan of every vehicle.
		total, err = s.countMatching(ctx, f)
	}
	if err != nil {
		return nil, "", 0, err
	}
	return page, next, total, nil
}

// countLoadTest counts the stored load-test vehicles: their ids share a prefix, so they
// are one contiguous run of the sorted ids.
func (s *Service) countLoadTest(ctx context.Context) (int, error) {
	// The id just before the prefix in byte order, so IDs (after it) starts at the run.
	n, cur := 0, telemetry.LoadTestPrefix[:len(telemetry.LoadTestPrefix)-1]+","
	for {
		ids, err := s.store.IDs(ctx, cur, listChunk)
		if err != nil || len(ids) == 0 {
			return n, err
		}
		for _, id := range ids {
			if !telemetry.IsLoadTest(id) {
				return n, nil
			}
			n++
		}
		cur = ids[len(ids)-1]
	}
}

func (s *Service) countMatching(ctx context.Context, f ListFilter) (int, error) {
	n, cur := 0, ""
	for {
		ids, err := s.store.IDs(ctx, cur, listChunk)
		if err != nil || len(ids) == 0 {
			return n, err
		}
		cur = ids[len(ids)-1]
		vs, err := s.store.Vehicles(ctx, ids)
		if err != nil {
			return 0, err
		}
		for i := range vs {
			if f.match(&vs[i]) {
				n++
			}
		}
	}
}

// Nearest returns up to k vehicles nearest to p within radiusM (0: anywhere), optionally
// only with one of statuses and in group.
func (s *Service) Nearest(ctx context.Context, p geo.Point, k int, radiusM float64, statuses []Status, group string) ([]Nearby, error) {
	if p.Lat < -90 || p.Lat > 90 || p.Lon < -180 || p.Lon > 180 || p.Lat != p.Lat || p.Lon != p.Lon {
		return nil, fmt.Errorf("%w: point %v out of range", ErrInvalid, p)
	}
	if radiusM < 0 || radiusM != radiusM {
		return nil, fmt.Errorf("%w: negative radius", ErrInvalid)
	}
	f := ListFilter{Group: group, Statuses: statuses}
	// Always filtered: load-test vehicles are never the nearest.
	q := NearestQuery{Point: p, K: k, RadiusM: radiusM, Accept: f.match}
	return s.store.Nearest(ctx, q)
}

// Track returns a vehicle's fixes in [from, to], simplified to tolM metres when tolM > 0,
// and the number of fixes before simplification.
func (s *Service) Track(ctx context.Context, id string, from, to time.Time, tolM float64) ([]Fix, int, error) {
	if err := checkRange(id, from, to); err != nil {
		return nil, 0, err
	}
	if tolM < 0 {
		return nil, 0, fmt.Errorf("%w: negative tolerance", ErrInvalid)
	}
	fixes, err := s.store.Track(ctx, id, from, to)
	if err != nil {
		return nil, 0, err
	}
	return Simplify(fixes, tolM), len(fixes), nil
}

// defaultExportPage is Config.ExportPage's default.
const defaultExportPage = time.Hour

// TrackPages calls fn with a vehicle's fixes in [from, to] a page at a time, in time
// order: each page is the history of one ExportPage of device time, read when the previous
// fn returned, so a caller that writes each page out holds one page, not the period.
func (s *Service) TrackPages(ctx context.Context, id string, from, to time.Time, fn func([]Fix) error) error {
	if err := checkRange(id, from, to); err != nil {
		return err
	}
	page := s.cfg.ExportPage
	if page == 0 {
		page = defaultExportPage
	}
	for start := from; !start.After(to); start = start.Add(page) {
		// The store's range is inclusive at both ends: a page stops just before the next.
		end := start.Add(page - time.Nanosecond)
		if end.After(to) {
			end = to
		}
		fixes, err := s.store.Track(ctx, id, start, end)
		if err != nil {
			return err
		}
		if len(fixes) == 0 {
			continue
		}
		if err := fn(fixes); err != nil {
			return err
		}
	}
	return nil
}

// Trips segments a vehicle's history in [from, to].
func (s *Service) Trips(ctx context.Context, id string, from, to time.Time) ([]Trip, []Stop, error) {
	if err := checkRange(id, from, to); err != nil {
		return nil, nil, err
	}
	fixes, err := s.store.Track(ctx, id, from, to)
	if err != nil {
		return nil, nil, err
	}
	tc := s.cfg.Trips
	if len(s.cfg.GroupTrips) > 0 {
		// The vehicle's groups pick its trip thresholds.
		vs, err := s.store.Vehicles(ctx, []string{id})
		if err != nil {
			return nil, nil, err
		}
		if len(vs) == 1 {
			tc = s.cfg.TripsFor(vs[0].Info.Groups)
		}
	}
	trips, stops := Segment(fixes, tc)
	return trips, stops, nil
}

// maxQueryRange bounds track and trip queries (the retention is 30 days by default).
const maxQueryRange = 92 * 24 * time.Hour

func checkRange(id string, from, to time.Time) error {
	if err := telemetry.ValidVehicleID(id); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if to.Before(from) {
		return fmt.Errorf("%w: end before start", ErrInvalid)
	}
	if to.Sub(from) > maxQueryRange {
		return fmt.Errorf("%w: range longer than %v", ErrInvalid, maxQueryRange)
	}
	return nil
}

// RegisterVehicle adds a vehicle to the registry.
func (s *Service) RegisterVehicle(ctx context.Context, info Info) (Vehicle, error) {
	if err := telemetry.ValidVehicleID(info.ID); err != nil {
		return Vehicle{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := s.store.Register(ctx, info); err != nil {
		return Vehicle{}, err
	}
	if err := s.publishGroups(ctx, info); err != nil {
		return Vehicle{}, err
	}
	v, err := s.Vehicle(ctx, info.ID)
	if err != nil {
		return Vehicle{}, err
	}
	s.registryChanged(v)
	return v, nil
}

// UpdateFields says which registry fields Update changes.
type UpdateFields struct{ Name, Plate, Groups, Metadata bool }

// UpdateVehicle changes the given fields of a registered vehicle.
func (s *Service) UpdateVehicle(ctx context.Context, info Info, fields UpdateFields) (Vehicle, error) {
	cur, err := s.Vehicle(ctx, info.ID)
	if err != nil {
		return Vehicle{}, err
	}
	if !cur.Info.Registered {
		return Vehicle{}, fmt.Errorf("vehicle %s is not registered: %w", info.ID, ErrNotFound)
	}
	next := cur.Info
	if fields.Name {
		next.Name = info.Name
	}
	if fields.Plate {
		next.Plate = info.Plate
	}
	if fields.Groups {
		next.Groups = info.Groups
	}
	if fields.Metadata {
		next.Metadata = info.Metadata
	}
	if err := s.store.Update(ctx, next); err != nil {
		return Vehicle{}, err
	}
	if err := s.publishGroups(ctx, next); err != nil {
		return Vehicle{}, err
	}
	cur.Info = next
	s.registryChanged(cur)
	return cur, nil
}

// DeleteVehicle removes a vehicle at once: registry entry and groups, live state and
// position, and its history within the retention (a reused id starts clean). The
// vehicle's partition is held meanwhile, so a batch being processed does not write its
// state back. A device that keeps reporting brings the id back as an unregistered vehicle.
func (s *Service) DeleteVehicle(ctx context.Context, id string) (Vehicle, error) {
	v, err := s.Vehicle(ctx, id)
	if err != nil {
		return Vehicle{}, err
	}
	s.mu.RLock()
	var pmu *sync.Mutex
	if s.nParts > 0 {
		pmu = &s.partMu[bus.PartitionOf(id, s.nParts)]
	}
	s.mu.RUnlock()
	if pmu != nil {
		pmu.Lock()
		defer pmu.Unlock()
	}
	// Groups first: a failure after it leaves the vehicle in place for a retry, never a
	// group entry that no later delete can find.
	if err := s.unpublishGroups(ctx, id); err != nil {
		return Vehicle{}, err
	}
	now := s.now()
	if err := s.store.Delete(ctx, []string{id}, now.Add(-s.cfg.HistoryRetention-24*time.Hour), now.Add(48*time.Hour)); err != nil {
		return Vehicle{}, err
	}
	s.mu.Lock()
	delete(s.cache, id)
	s.mu.Unlock()
	s.log.Info("vehicle deleted", "vehicle", id, "registered", v.Info.Registered)
	return v, nil
}
