package maintenance

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
)

// ErrNotFound is returned by stores for a missing plan, group, vehicle or profile.
var ErrNotFound = errors.New("not found")

// FuelEvent is a detected refuel or drain of a vehicle, as stored and reported.
type FuelEvent struct {
	ID        string `json:"id"`
	VehicleID string `json:"vehicle_id"`
	fuel.Event
}

// FuelSample is a point of a vehicle's fuel history, written every SampleEvery of device
// time. The totals are running counters, so a report subtracts two samples.
type FuelSample struct {
	Time      time.Time `json:"t"`
	LevelL    float64   `json:"l"`
	HasLevel  bool      `json:"hl,omitempty"`
	DistanceM float64   `json:"d"`
	EngineSec float64   `json:"e"`
	IdleSec   float64   `json:"i"`
}

// Store keeps the maintenance service's state. Every write is idempotent (keyed by id
// or time), because the bus redelivers a batch whose processing failed half-way.
type Store interface {
	PutPlan(ctx context.Context, p Plan) error
	GetPlan(ctx context.Context, id string) (Plan, error)
	DeletePlan(ctx context.Context, id string) error
	ListPlans(ctx context.Context) ([]Plan, error) // ordered by id

	PutGroup(ctx context.Context, g Group) error
	GetGroup(ctx context.Context, id string) (Group, error)
	ListGroups(ctx context.Context) ([]Group, error) // ordered by id

	// AddService stores a service book entry (again: replaced) and keeps, per plan, the
	// latest entry by service time.
	AddService(ctx context.Context, e ServiceEntry) error
	ListServices(ctx context.Context, vehicle string) ([]ServiceEntry, error) // newest first
	// LatestServices returns, per vehicle and plan, the latest entry (vehicles without
	// one are absent).
	LatestServices(ctx context.Context, vehicles []string) (map[string]map[string]ServiceEntry, error)

	// GetVehicles returns the states of the vehicles that have one.
	GetVehicles(ctx context.Context, ids []string) (map[string]*VehicleState, error)
	PutVehicles(ctx context.Context, vs []*VehicleState) error
	ListVehicleIDs(ctx context.Context) ([]string, error) // ordered

	PutFuelProfile(ctx context.Context, vehicle string, p fuel.Profile) error
	// GetFuelProfiles returns the profiles of the vehicles that have one.
	GetFuelProfiles(ctx context.Context, ids []string) (map[string]fuel.Profile, error)

	AddFuelEvents(ctx context.Context, evs []FuelEvent) error
	// ListFuelEvents returns a vehicle's events that start in [from, to), oldest first.
	ListFuelEvents(ctx context.Context, vehicle string, from, to time.Time) ([]FuelEvent, error)
	// AddFuelSamples stores samples by vehicle; a sample at an instant already stored
	// replaces it.
	AddFuelSamples(ctx context.Context, byVehicle map[string][]FuelSample) error
	// ListFuelSamples returns samples in [from, to] plus the last one before from,
	// oldest first.
	ListFuelSamples(ctx context.Context, vehicle string, from, to time.Time) ([]FuelSample, error)
}

// MemoryStore is the in-memory Store of the all-in-one binary and of tests. Values are
// copied in and out, so callers never share state with it.
type MemoryStore struct {
	// SampleRetention bounds the fuel history kept per vehicle (8 days: a memory store
	// is rebuilt from the telemetry stream, which keeps 7 days by default).
	SampleRetention time.Duration

	mu       sync.Mutex
	plans    map[string]Plan
	groups   map[string]Group
	services map[string]map[string]ServiceEntry // vehicle → id → entry
	latest   map[string]map[string]ServiceEntry // vehicle → plan → entry
	vehicles map[string]*VehicleState           // private copies: handed out and taken in cloned
	profiles map[string]fuel.Profile
	events   map[string]map[string]FuelEvent // vehicle → id → event
	samples  map[string][]FuelSample         // by time
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{
		SampleRetention: 8 * 24 * time.Hour,
		plans:           map[string]Plan{},
		groups:          map[string]Group{},
		services:        map[string]map[string]ServiceEntry{},
		latest:          map[string]map[string]ServiceEntry{},
		vehicles:        map[string]*VehicleState{},
		profiles:        map[string]fuel.Profile{},
		events:          map[string]map[string]FuelEvent{},
		samples:         map[string][]FuelSample{},
	}
}

func (m *MemoryStore) PutPlan(_ context.Context, p Plan) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p.Items = slices.Clone(p.Items)
	m.plans[p.ID] = p
	return nil
}

func (m *MemoryStore) GetPlan(_ context.Context, id string) (Plan, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.plans[id]
	if !ok {
		return Plan{}, ErrNotFound
	}
	p.Items = slices.Clone(p.Items)
	return p, nil
}

func (m *MemoryStore) DeletePlan(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.plans[id]; !ok {
		return ErrNotFound
	}
	delete(m.plans, id)
	return nil
}

func (m *MemoryStore) ListPlans(_ context.Context) ([]Plan, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Plan, 0, len(m.plans))
	for _, p := range m.plans {
		p.Items = slices.Clone(p.Items)
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (m *MemoryStore) PutGroup(_ context.Context, g Group) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	g.Vehicles = slices.Clone(g.Vehicles)
	m.groups[g.ID] = g
	return nil
}

func (m *MemoryStore) GetGroup(_ context.Context, id string) (Group, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.groups[id]
	if !ok {
		return Group{}, ErrNotFound
	}
	g.Vehicles = slices.Clone(g.Vehicles)
	return g, nil
}

func (m *MemoryStore) ListGroups(_ context.Context) ([]Group, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Group, 0, len(m.groups))
	for _, g := range m.groups {
		g.Vehicles = slices.Clone(g.Vehicles)
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (m *MemoryStore) AddService(_ context.Context, e ServiceEntry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.Items = slices.Clone(e.Items)
	if m.services[e.VehicleID] == nil {
		m.services[e.VehicleID] = map[string]ServiceEntry{}
	}
	m.services[e.VehicleID][e.ID] = e
	if e.PlanID != "" {
		if m.latest[e.VehicleID] == nil {
			m.latest[e.VehicleID] = map[string]ServiceEntry{}
		}
		if cur, ok := m.latest[e.VehicleID][e.PlanID]; !ok || cur.ID == e.ID || newerService(e, cur) {
			m.latest[e.VehicleID][e.PlanID] = e
		}
	}
	return nil
}

// newerService orders service entries by time, then id, so every store picks the same
// latest entry.
func newerService(a, b ServiceEntry) bool {
	if !a.Time.Equal(b.Time) {
		return a.Time.After(b.Time)
	}
	return a.ID > b.ID
}

func sortServices(out []ServiceEntry) {
	sort.Slice(out, func(i, j int) bool { return newerService(out[i], out[j]) })
}

func (m *MemoryStore) ListServices(_ context.Context, vehicle string) ([]ServiceEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ServiceEntry, 0, len(m.services[vehicle]))
	for _, e := range m.services[vehicle] {
		e.Items = slices.Clone(e.Items)
		out = append(out, e)
	}
	sortServices(out)
	return out, nil
}

func (m *MemoryStore) LatestServices(_ context.Context, vehicles []string) (map[string]map[string]ServiceEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]map[string]ServiceEntry{}
	for _, v := range vehicles {
		if len(m.latest[v]) == 0 {
			continue
		}
		byPlan := make(map[string]ServiceEntry, len(m.latest[v]))
		for k, e := range m.latest[v] {
			e.Items = slices.Clone(e.Items)
			byPlan[k] = e
		}
		out[v] = byPlan
	}
	return out, nil
}

func (m *MemoryStore) GetVehicles(_ context.Context, ids []string) (map[string]*VehicleState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]*VehicleState, len(ids))
	for _, id := range ids {
		if v, ok := m.vehicles[id]; ok {
			out[id] = v.clone()
		}
	}
	return out, nil
}

func (m *MemoryStore) PutVehicles(_ context.Context, vs []*VehicleState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range vs {
		m.vehicles[v.VehicleID] = v.clone()
	}
	return nil
}

func (m *MemoryStore) ListVehicleIDs(_ context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedKeys(m.vehicles), nil
}

func (m *MemoryStore) PutFuelProfile(_ context.Context, vehicle string, p fuel.Profile) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p.Calibration = slices.Clone(p.Calibration)
	m.profiles[vehicle] = p
	return nil
}

func (m *MemoryStore) GetFuelProfiles(_ context.Context, ids []string) (map[string]fuel.Profile, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]fuel.Profile{}
	for _, id := range ids {
		if p, ok := m.profiles[id]; ok {
			p.Calibration = slices.Clone(p.Calibration)
			out[id] = p
		}
	}
	return out, nil
}

func (m *MemoryStore) AddFuelEvents(_ context.Context, evs []FuelEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range evs {
		if m.events[e.VehicleID] == nil {
			m.events[e.VehicleID] = map[string]FuelEvent{}
		}
		m.events[e.VehicleID][e.ID] = e
	}
	return nil
}

func sortFuelEvents(out []FuelEvent) {
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.Before(out[j].Start)
		}
		return out[i].ID < out[j].ID
	})
}

func (m *MemoryStore) ListFuelEvents(_ context.Context, vehicle string, from, to time.Time) ([]FuelEvent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []FuelEvent
	for _, e := range m.events[vehicle] {
		if !e.Start.Before(from) && e.Start.Before(to) {
			out = append(out, e)
		}
	}
	sortFuelEvents(out)
	return out, nil
}

func (m *MemoryStore) AddFuelSamples(_ context.Context, byVehicle map[string][]FuelSample) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for vehicle, ss := range byVehicle {
		m.addSamples(vehicle, ss)
	}
	return nil
}

func (m *MemoryStore) addSamples(vehicle string, ss []FuelSample) {
	cur := m.samples[vehicle]
	for _, s := range ss {
		i, found := slices.BinarySearchFunc(cur, s.Time, func(a FuelSample, t time.Time) int { return a.Time.Compare(t) })
		if found {
			cur[i] = s
			continue
		}
		cur = slices.Insert(cur, i, s)
	}
	if m.SampleRetention > 0 && len(cur) > 0 {
		cut := cur[len(cur)-1].Time.Add(-m.SampleRetention)
		i, _ := slices.BinarySearchFunc(cur, cut, func(a FuelSample, t time.Time) int { return a.Time.Compare(t) })
		cur = slices.Delete(cur, 0, i)
	}
	m.samples[vehicle] = cur
}

func (m *MemoryStore) ListFuelSamples(_ context.Context, vehicle string, from, to time.Time) ([]FuelSample, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.samples[vehicle]
	i, _ := slices.BinarySearchFunc(cur, from, func(a FuelSample, t time.Time) int { return a.Time.Compare(t) })
	if i > 0 {
		i--
	}
	var out []FuelSample
	for ; i < len(cur) && !cur[i].Time.After(to); i++ {
		out = append(out, cur[i])
	}
	return out, nil
}

// validID reports whether id is usable as a key part (same rule as vehicle ids).
func validID(id string) bool {
	return id != "" && len(id) <= 64 && strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) < 0
}
