package dispatch

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Store persists alerts, commands and the per-vehicle detection state. MemoryStore and
// RedisStore implement it and pass the same conformance suite.
type Store interface {
	// RaiseAlert records occurrence a. When a.CauseID was seen before it returns the alert
	// it went into, unchanged (redelivery). When an unresolved alert with a.IncidentKey has
	// its latest occurrence no more than cooldown before a's, a is merged into it. Otherwise
	// a new alert is created with the next id. created reports the last case. Ids are
	// assigned and made visible atomically, so a reader never sees id n+1 before n.
	RaiseAlert(ctx context.Context, a Alert, cooldown time.Duration) (out Alert, created bool, err error)
	// GetAlert returns one alert, or ErrNotFound.
	GetAlert(ctx context.Context, id uint64) (Alert, error)
	// ListAlerts returns alerts matching f in id order (descending unless f.Ascending).
	ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error)
	// LastAlertID returns the highest id assigned (0 when none).
	LastAlertID(ctx context.Context) (uint64, error)
	// SetAlertState acknowledges or resolves an alert (ErrBadTransition when not allowed).
	SetAlertState(ctx context.Context, id uint64, to AlertState, who, note string, at time.Time) (Alert, error)
	// ResolveIncident resolves the open alert of incident key, if any (found=false if none).
	ResolveIncident(ctx context.Context, key, who, note string, at time.Time) (a Alert, found bool, err error)
	// CountAlerts returns how many retained alerts match f's field conditions (not its id
	// window or limit).
	CountAlerts(ctx context.Context, f AlertFilter) (int, error)
	// PruneAlerts removes up to limit alerts resolved before resolvedBefore and returns how
	// many it removed. Their ids are never reused; a later occurrence of their incident
	// raises a new alert.
	PruneAlerts(ctx context.Context, resolvedBefore time.Time, limit int) (int, error)
	// SetDelivery replaces the alert's delivery to d.Sink (ErrNotFound when it has none).
	SetDelivery(ctx context.Context, id uint64, d Delivery) (Alert, error)
	// PendingDeliveries returns up to limit alerts with a delivery still pending, oldest
	// first.
	PendingDeliveries(ctx context.Context, limit int) ([]Alert, error)

	// GetVehicle returns the detection state of a vehicle (ok=false when never stored).
	GetVehicle(ctx context.Context, vehicle string) (v VehicleState, ok bool, err error)
	// PutVehicle stores the detection state of a vehicle.
	PutVehicle(ctx context.Context, v VehicleState) error
	// GetVehicles returns the states of the vehicles that have one (one round trip: the
	// telemetry handler loads a whole batch's vehicles at once).
	GetVehicles(ctx context.Context, vehicles []string) (map[string]VehicleState, error)
	// PutVehicles stores several states at once.
	PutVehicles(ctx context.Context, vs []VehicleState) error
	// WithOpenCommands returns which of vehicles have open (queued, sent, accepted) commands.
	WithOpenCommands(ctx context.Context, vehicles []string) (map[string]bool, error)

	// CreateCommand stores a new command, assigning its ID and Version 1.
	CreateCommand(ctx context.Context, c Command) (Command, error)
	// GetCommand returns one command, or ErrNotFound.
	GetCommand(ctx context.Context, id string) (Command, error)
	// UpdateCommand stores c if the stored version equals c.Version (ErrConflict
	// otherwise) and returns it with the version incremented.
	UpdateCommand(ctx context.Context, c Command) (Command, error)
	// ListCommands returns commands matching f, newest first.
	ListCommands(ctx context.Context, f CommandFilter) ([]Command, error)
}

// causeMemory bounds how many cause ids the memory store remembers for redelivery
// detection; JetStream redelivers within minutes, so the newest ones are what matter.
const causeMemory = 200_000

// MemoryStore is the in-process Store of the all-in-one binary and the tests.
type MemoryStore struct {
	mu sync.Mutex
	// alerts holds ids base+1 … base+len(alerts) in order; a pruned alert leaves nil
	// until every alert before it is pruned too, when the window moves on.
	alerts   []*Alert
	base     uint64
	open     map[string]uint64 // incident key → newest alert id with it
	causes   map[string]uint64
	causeLog []string // FIFO of causes, for the bound
	vehicles map[string]VehicleState
	cmds     map[string]Command
	cmdOrder []string
	openCmds map[string]map[string]struct{} // vehicle → ids of open commands
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{
		open: map[string]uint64{}, causes: map[string]uint64{},
		vehicles: map[string]VehicleState{}, cmds: map[string]Command{},
		openCmds: map[string]map[string]struct{}{},
	}
}

// alert returns the stored alert with id, nil when unknown or pruned.
func (m *MemoryStore) alert(id uint64) *Alert {
	if id <= m.base || id > m.base+uint64(len(m.alerts)) {
		return nil
	}
	return m.alerts[id-m.base-1]
}

func (m *MemoryStore) lastID() uint64 { return m.base + uint64(len(m.alerts)) }

func cloneAlert(a Alert) Alert {
	a.Sources = slices.Clone(a.Sources)
	a.Evidence = slices.Clone(a.Evidence)
	a.Deliveries = slices.Clone(a.Deliveries)
	if a.Attributes != nil {
		m := make(map[string]string, len(a.Attributes))
		for k, v := range a.Attributes {
			m[k] = v
		}
		a.Attributes = m
	}
	return a
}

func cloneCommand(c Command) Command {
	c.History = slices.Clone(c.History)
	if c.Params != nil {
		m := make(map[string]string, len(c.Params))
		for k, v := range c.Params {
			m[k] = v
		}
		c.Params = m
	}
	return c
}

func (m *MemoryStore) rememberCause(cause string, id uint64) {
	if cause == "" {
		return
	}
	if len(m.causeLog) >= causeMemory {
		delete(m.causes, m.causeLog[0])
		m.causeLog = m.causeLog[1:]
	}
	m.causes[cause] = id
	m.causeLog = append(m.causeLog, cause)
}

// RaiseAlert implements Store.
func (m *MemoryStore) RaiseAlert(_ context.Context, a Alert, cooldown time.Duration) (Alert, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id, ok := m.causes[a.CauseID]; ok && a.CauseID != "" {
		if cur := m.alert(id); cur != nil {
			return cloneAlert(*cur), false, nil
		}
		// Seen before, its alert since pruned: still a repeat.
		a.ID = id
		return a, false, nil
	}
	if id, ok := m.open[a.IncidentKey]; ok {
		if cur := m.alert(id); cur != nil && cur.mergeable(&a, cooldown) {
			cur.merge(&a)
			m.rememberCause(a.CauseID, id)
			return cloneAlert(*cur), false, nil
		}
	}
	a = cloneAlert(a)
	a.ID = m.lastID() + 1
	m.alerts = append(m.alerts, &a)
	m.open[a.IncidentKey] = a.ID
	m.rememberCause(a.CauseID, a.ID)
	return cloneAlert(a), true, nil
}

// GetAlert implements Store.
func (m *MemoryStore) GetAlert(_ context.Context, id uint64) (Alert, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.alert(id)
	if a == nil {
		return Alert{}, fmt.Errorf("alert %d: %w", id, ErrNotFound)
	}
	return cloneAlert(*a), nil
}

// ListAlerts implements Store.
func (m *MemoryStore) ListAlerts(_ context.Context, f AlertFilter) ([]Alert, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Alert
	n := f.limit()
	if f.Ascending {
		for id := max(f.AfterID, m.base) + 1; id <= m.lastID() && len(out) < n; id++ {
			if a := m.alert(id); a != nil && f.Match(a) {
				out = append(out, cloneAlert(*a))
			}
		}
		return out, nil
	}
	id := m.lastID()
	if f.BeforeID > 0 {
		id = min(id, f.BeforeID-1)
	}
	for ; id > m.base && len(out) < n; id-- {
		if a := m.alert(id); a != nil && f.Match(a) {
			out = append(out, cloneAlert(*a))
		}
	}
	return out, nil
}

// CountAlerts implements Store.
func (m *MemoryStore) CountAlerts(_ context.Context, f AlertFilter) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, a := range m.alerts {
		if a != nil && f.Match(a) {
			n++
		}
	}
	return n, nil
}

// LastAlertID implements Store.
func (m *MemoryStore) LastAlertID(context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastID(), nil
}

// SetAlertState implements Store.
func (m *MemoryStore) SetAlertState(_ context.Context, id uint64, to AlertState, who, note string, at time.Time) (Alert, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.alert(id)
	if cur == nil {
		return Alert{}, fmt.Errorf("alert %d: %w", id, ErrNotFound)
	}
	a := cloneAlert(*cur)
	if err := a.transition(to, who, note, at); err != nil {
		return Alert{}, err
	}
	*cur = a
	return cloneAlert(a), nil
}

// SetDelivery implements Store.
func (m *MemoryStore) SetDelivery(_ context.Context, id uint64, d Delivery) (Alert, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.alert(id)
	if cur == nil {
		return Alert{}, fmt.Errorf("alert %d: %w", id, ErrNotFound)
	}
	a := cloneAlert(*cur)
	if !a.setDelivery(d) {
		return Alert{}, fmt.Errorf("alert %d has no delivery to sink %q: %w", id, d.Sink, ErrNotFound)
	}
	*cur = a
	return cloneAlert(a), nil
}

// PendingDeliveries implements Store.
func (m *MemoryStore) PendingDeliveries(_ context.Context, limit int) ([]Alert, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Alert
	for _, a := range m.alerts {
		if a != nil && a.pendingDelivery() {
			out = append(out, cloneAlert(*a))
			if len(out) == limit {
				break
			}
		}
	}
	return out, nil
}

// PruneAlerts implements Store.
func (m *MemoryStore) PruneAlerts(_ context.Context, resolvedBefore time.Time, limit int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for i, a := range m.alerts {
		if n == limit {
			break
		}
		if a == nil || a.State != AlertResolved || !a.ResolveTime.Before(resolvedBefore) {
			continue
		}
		if m.open[a.IncidentKey] == a.ID {
			delete(m.open, a.IncidentKey)
		}
		m.alerts[i] = nil
		n++
	}
	// Let go of the pruned alerts at the front; ids stay as they were.
	k := 0
	for k < len(m.alerts) && m.alerts[k] == nil {
		k++
	}
	if k > 0 {
		m.base += uint64(k)
		m.alerts = slices.Clone(m.alerts[k:])
	}
	return n, nil
}

// ResolveIncident implements Store.
func (m *MemoryStore) ResolveIncident(_ context.Context, key, who, note string, at time.Time) (Alert, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.open[key]
	a := m.alert(id)
	if !ok || a == nil || a.State == AlertResolved {
		return Alert{}, false, nil
	}
	if err := a.transition(AlertResolved, who, note, at); err != nil {
		return Alert{}, false, err
	}
	return cloneAlert(*a), true, nil
}

// GetVehicle implements Store.
func (m *MemoryStore) GetVehicle(_ context.Context, vehicle string) (VehicleState, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vehicles[vehicle]
	return cloneVehicle(v), ok, nil
}

// cloneVehicle copies a state's slices: callers change their copy while others read the
// stored one (the consumer applies records while the command gate reads).
func cloneVehicle(v VehicleState) VehicleState {
	v.RecentFixes = slices.Clone(v.RecentFixes)
	v.ParkCells = slices.Clone(v.ParkCells)
	for _, inc := range []*Incident{&v.Tow, &v.Jam, &v.Hours} {
		inc.Evidence = slices.Clone(inc.Evidence)
	}
	return v
}

// PutVehicle implements Store.
func (m *MemoryStore) PutVehicle(_ context.Context, v VehicleState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vehicles[v.Vehicle] = cloneVehicle(v)
	return nil
}

// GetVehicles implements Store.
func (m *MemoryStore) GetVehicles(_ context.Context, vehicles []string) (map[string]VehicleState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]VehicleState, len(vehicles))
	for _, id := range vehicles {
		if v, ok := m.vehicles[id]; ok {
			out[id] = cloneVehicle(v)
		}
	}
	return out, nil
}

// PutVehicles implements Store.
func (m *MemoryStore) PutVehicles(_ context.Context, vs []VehicleState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range vs {
		m.vehicles[v.Vehicle] = cloneVehicle(v)
	}
	return nil
}

// WithOpenCommands implements Store.
func (m *MemoryStore) WithOpenCommands(_ context.Context, vehicles []string) (map[string]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]bool{}
	for _, id := range vehicles {
		if len(m.openCmds[id]) > 0 {
			out[id] = true
		}
	}
	return out, nil
}

// CreateCommand implements Store.
func (m *MemoryStore) CreateCommand(_ context.Context, c Command) (Command, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c = cloneCommand(c)
	c.ID = "c" + strconv.Itoa(len(m.cmdOrder)+1)
	c.Version = 1
	m.cmds[c.ID] = c
	m.cmdOrder = append(m.cmdOrder, c.ID)
	m.indexOpen(&c)
	return cloneCommand(c), nil
}

// GetCommand implements Store.
func (m *MemoryStore) GetCommand(_ context.Context, id string) (Command, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cmds[id]
	if !ok {
		return Command{}, fmt.Errorf("command %s: %w", id, ErrNotFound)
	}
	return cloneCommand(c), nil
}

// UpdateCommand implements Store.
func (m *MemoryStore) UpdateCommand(_ context.Context, c Command) (Command, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.cmds[c.ID]
	if !ok {
		return Command{}, fmt.Errorf("command %s: %w", c.ID, ErrNotFound)
	}
	if cur.Version != c.Version {
		return Command{}, fmt.Errorf("command %s version %d, stored %d: %w", c.ID, c.Version, cur.Version, ErrConflict)
	}
	c = cloneCommand(c)
	c.Version++
	m.cmds[c.ID] = c
	m.indexOpen(&c)
	return cloneCommand(c), nil
}

func (m *MemoryStore) indexOpen(c *Command) {
	set := m.openCmds[c.Vehicle]
	if c.State.Open() {
		if set == nil {
			set = map[string]struct{}{}
			m.openCmds[c.Vehicle] = set
		}
		set[c.ID] = struct{}{}
		return
	}
	delete(set, c.ID)
	if len(set) == 0 {
		delete(m.openCmds, c.Vehicle)
	}
}

// ListCommands implements Store.
func (m *MemoryStore) ListCommands(_ context.Context, f CommandFilter) ([]Command, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Command
	if f.OpenOnly {
		// The hot path (every batch asks for a vehicle's open commands) uses the index.
		for v, set := range m.openCmds {
			if f.Vehicle != "" && v != f.Vehicle {
				continue
			}
			for id := range set {
				if c := m.cmds[id]; f.Match(&c) {
					out = append(out, cloneCommand(c))
				}
			}
		}
		sortCommandsNewestFirst(out)
		return out[:min(len(out), f.limit())], nil
	}
	for i := len(m.cmdOrder) - 1; i >= 0 && len(out) < f.limit(); i-- {
		c := m.cmds[m.cmdOrder[i]]
		if f.Match(&c) {
			out = append(out, cloneCommand(c))
		}
	}
	return out, nil
}

// commandSeq is the number in a command id "c<n>" (0 for a foreign id).
func commandSeq(id string) int64 {
	n, _ := strconv.ParseInt(strings.TrimPrefix(id, "c"), 10, 64)
	return n
}

func sortCommandsNewestFirst(cs []Command) {
	slices.SortFunc(cs, func(a, b Command) int { return cmp.Compare(commandSeq(b.ID), commandSeq(a.ID)) })
}
