package tracking

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"
)

// MemoryStore keeps everything in process memory: the embedded default. It survives a
// restart of the Service that uses it (not of the process).
type MemoryStore struct {
	mu       sync.RWMutex
	vehicles map[string]*memVehicle
	ids      []string // sorted
	idx      *index
}

type memVehicle struct {
	info  Info
	state *State
	hist  []Fix // ordered by (Time, Seq)
}

var _ Store = (*MemoryStore)(nil)

// MemoryHistoryLimit caps the fixes the memory store keeps per vehicle, besides the time
// retention, so a long-running all-in-one process stays within memory: 250 000 fixes
// (about 24 MB) are 2.9 days at 1 Hz or 29 days at one fix every 10 s. Oldest go first.
const MemoryHistoryLimit = 250_000

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{vehicles: make(map[string]*memVehicle), idx: newIndex()}
}

func (m *MemoryStore) vehicle(id string) *memVehicle {
	v, ok := m.vehicles[id]
	if !ok {
		v = &memVehicle{info: Info{ID: id}}
		m.vehicles[id] = v
		i, _ := slices.BinarySearch(m.ids, id)
		m.ids = slices.Insert(m.ids, i, id)
	}
	return v
}

// Write stores the batch's states and fixes; see Store.
func (m *MemoryStore) Write(_ context.Context, b Batch) error {
	cutoff := b.Now.Add(-b.Retention)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, st := range b.States {
		v := m.vehicle(st.VehicleID)
		v.state = st.Clone()
		if st.HasFix {
			m.idx.Set(st.VehicleID, st.Fix.Point(), v)
		}
	}
	for _, p := range b.Points {
		if b.Retention > 0 && p.Time.Before(cutoff) {
			continue
		}
		v := m.vehicle(p.VehicleID)
		v.hist = insertFix(v.hist, p.Fix)
		if len(v.hist) > MemoryHistoryLimit {
			v.hist = slices.Delete(v.hist, 0, len(v.hist)-MemoryHistoryLimit)
		}
		if b.Retention > 0 && len(v.hist) > 0 && v.hist[0].Time.Before(cutoff) {
			i := sort.Search(len(v.hist), func(i int) bool { return !v.hist[i].Time.Before(cutoff) })
			v.hist = slices.Delete(v.hist, 0, i)
		}
	}
	for _, p := range b.Removed {
		v, ok := m.vehicles[p.VehicleID]
		if !ok {
			continue
		}
		i := sort.Search(len(v.hist), func(i int) bool { return !fixBefore(&v.hist[i], &p.Fix) })
		if i < len(v.hist) && v.hist[i].Time.Equal(p.Time) && v.hist[i].Seq == p.Seq {
			v.hist = slices.Delete(v.hist, i, i+1)
		}
	}
	return nil
}

// Delete removes vehicles; see Store.
func (m *MemoryStore) Delete(_ context.Context, ids []string, _, _ time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		if _, ok := m.vehicles[id]; !ok {
			continue
		}
		delete(m.vehicles, id)
		m.idx.Remove(id)
		if i, ok := slices.BinarySearch(m.ids, id); ok {
			m.ids = slices.Delete(m.ids, i, i+1)
		}
	}
	return nil
}

// insertFix adds f in (Time, Seq) order unless an identical key is there.
func insertFix(h []Fix, f Fix) []Fix {
	n := len(h)
	if n == 0 || fixBefore(&h[n-1], &f) {
		return append(h, f)
	}
	i := sort.Search(n, func(i int) bool { return !fixBefore(&h[i], &f) })
	if i < n && h[i].Time.Equal(f.Time) && h[i].Seq == f.Seq {
		h[i] = f
		return h
	}
	return slices.Insert(h, i, f)
}

func fixBefore(a, b *Fix) bool {
	if !a.Time.Equal(b.Time) {
		return a.Time.Before(b.Time)
	}
	return a.Seq < b.Seq
}

// States returns copies of the stored states.
func (m *MemoryStore) States(_ context.Context, ids []string) ([]*State, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*State, len(ids))
	for i, id := range ids {
		if v, ok := m.vehicles[id]; ok && v.state != nil {
			out[i] = v.state.Clone()
		}
	}
	return out, nil
}

// Vehicles returns copies of info and state.
func (m *MemoryStore) Vehicles(_ context.Context, ids []string) ([]Vehicle, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Vehicle, 0, len(ids))
	for _, id := range ids {
		if v, ok := m.vehicles[id]; ok {
			out = append(out, v.copy())
		}
	}
	return out, nil
}

func (v *memVehicle) copy() Vehicle {
	out := Vehicle{Info: copyInfo(v.info)}
	if v.state != nil {
		out.State = v.state.Clone()
	}
	return out
}

func copyInfo(i Info) Info {
	i.Groups = slices.Clone(i.Groups)
	i.Metadata = maps.Clone(i.Metadata)
	return i
}

// IDs returns sorted ids after after.
func (m *MemoryStore) IDs(_ context.Context, after string, limit int) ([]string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	i := 0
	if after != "" {
		var found bool
		i, found = slices.BinarySearch(m.ids, after)
		if found {
			i++
		}
	}
	end := min(len(m.ids), i+limit)
	return slices.Clone(m.ids[i:end]), nil
}

// Count returns the number of vehicles.
func (m *MemoryStore) Count(context.Context) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.ids), nil
}

// Register adds a vehicle to the registry.
func (m *MemoryStore) Register(_ context.Context, info Info) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.vehicle(info.ID)
	if v.info.Registered {
		return fmt.Errorf("register %s: %w", info.ID, ErrAlreadyExists)
	}
	v.info = copyInfo(info)
	v.info.Registered = true
	return nil
}

// Update replaces a registered vehicle's info.
func (m *MemoryStore) Update(_ context.Context, info Info) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vehicles[info.ID]
	if !ok || !v.info.Registered {
		return fmt.Errorf("update %s: %w", info.ID, ErrNotFound)
	}
	v.info = copyInfo(info)
	v.info.Registered = true
	return nil
}

// Nearest searches the R-tree nearest first.
func (m *MemoryStore) Nearest(_ context.Context, q NearestQuery) ([]Nearby, error) {
	if q.K <= 0 {
		return nil, nil
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Nearby, 0, q.K)
	var view Vehicle
	m.idx.Nearby(q.Point, q.RadiusM, func(e *indexed, d float64) bool {
		v := e.v
		if q.Accept != nil {
			// The filter sees the stored values without a copy; only matches are copied.
			view = Vehicle{Info: v.info, State: v.state}
			if !q.Accept(&view) {
				return true
			}
		}
		// Stored states and registry entries are replaced, never modified, so the result
		// can share them (Store.Nearest results are read-only).
		out = append(out, Nearby{Vehicle: Vehicle{Info: v.info, State: v.state}, DistanceM: d})
		return len(out) < q.K
	})
	return out, nil
}

// Track returns the fixes in [from, to].
func (m *MemoryStore) Track(_ context.Context, vehicle string, from, to time.Time) ([]Fix, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, ok := m.vehicles[vehicle]
	if !ok {
		return nil, nil
	}
	i := sort.Search(len(v.hist), func(i int) bool { return !v.hist[i].Time.Before(from) })
	j := sort.Search(len(v.hist), func(i int) bool { return v.hist[i].Time.After(to) })
	if i >= j {
		return nil, nil
	}
	return slices.Clone(v.hist[i:j]), nil
}
