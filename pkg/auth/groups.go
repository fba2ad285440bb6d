package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/bus"
)

// GroupsBucket is the JetStream key-value bucket mapping each registered vehicle to its
// groups. Tracking's registry calls (RegisterVehicle, UpdateVehicle) write it; every
// service reads it through Groups, so a group-scoped principal sees the same vehicles in
// tracking, geofence, maintenance and dispatch. A vehicle with no entry belongs to no group:
// it is invisible to every group-scoped principal.
const GroupsBucket = "FLEET_VEHICLE_GROUPS"

// Groups mirrors GroupsBucket in memory.
type Groups struct {
	kv  jetstream.KeyValue
	log *slog.Logger

	mu      sync.RWMutex
	of      map[string][]string
	members map[string]map[string]struct{} // group → vehicles, the inverse of of
}

// KeyValues provisions key-value buckets: a *bus.Bus (which serialises provisioning) or a
// jetstream.JetStream.
type KeyValues interface {
	CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
}

// OpenGroups opens (creating if needed) the bucket and mirrors it until ctx ends. It
// returns once the current contents are loaded.
func OpenGroups(ctx context.Context, js KeyValues, replicas int, log *slog.Logger) (*Groups, error) {
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: GroupsBucket, Description: "Fleetwire vehicle groups, for group-scoped principals", Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("vehicle groups bucket: %w", err)
	}
	g := &Groups{kv: kv, log: log, of: map[string][]string{}, members: map[string]map[string]struct{}{}}
	if err := bus.MirrorKV(ctx, kv, g.apply); err != nil {
		return nil, fmt.Errorf("vehicle groups bucket: %w", err)
	}
	return g, nil
}

func (g *Groups) apply(e jetstream.KeyValueEntry) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var gs []string
	if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &gs) == nil {
		g.setLocked(e.Key(), gs)
	} else {
		g.deleteLocked(e.Key())
	}
}

// setLocked records vehicle's groups in both directions. g.mu is held for writing.
func (g *Groups) setLocked(vehicle string, groups []string) {
	g.deleteLocked(vehicle)
	g.of[vehicle] = groups
	for _, grp := range groups {
		m := g.members[grp]
		if m == nil {
			m = map[string]struct{}{}
			g.members[grp] = m
		}
		m[vehicle] = struct{}{}
	}
}

// deleteLocked forgets vehicle in both directions. g.mu is held for writing.
func (g *Groups) deleteLocked(vehicle string) {
	for _, grp := range g.of[vehicle] {
		if m := g.members[grp]; m != nil {
			delete(m, vehicle)
			if len(m) == 0 {
				delete(g.members, grp)
			}
		}
	}
	delete(g.of, vehicle)
}

// Set records a vehicle's groups. Called by tracking's registry.
func (g *Groups) Set(ctx context.Context, vehicle string, groups []string) error {
	g.mu.RLock()
	cur, ok := g.of[vehicle]
	g.mu.RUnlock()
	if ok && slices.Equal(cur, groups) {
		return nil
	}
	data, _ := json.Marshal(groups)
	if _, err := g.kv.Put(ctx, vehicle, data); err != nil {
		return fmt.Errorf("vehicle %s groups: %w", Truncate(vehicle), err)
	}
	g.mu.Lock()
	g.setLocked(vehicle, slices.Clone(groups))
	g.mu.Unlock()
	return nil
}

// Delete forgets a vehicle: it leaves the registry every service reads. Called by
// tracking's DeleteVehicle; an unknown vehicle is not an error.
func (g *Groups) Delete(ctx context.Context, vehicle string) error {
	if err := g.kv.Delete(ctx, vehicle); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("vehicle %s groups: %w", Truncate(vehicle), err)
	}
	g.mu.Lock()
	g.deleteLocked(vehicle)
	g.mu.Unlock()
	return nil
}

// Of returns a vehicle's groups (nil when it has none or is unknown).
func (g *Groups) Of(vehicle string) []string {
	if g == nil {
		return nil
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.of[vehicle]
}

// Members returns the vehicles of group, sorted (nil when it has none). This is the one
// group model: maintenance's plans and fuel reports, geofence's zones and dispatch's
// schedules resolve a group through it, so "vans" names the same vehicles everywhere.
func (g *Groups) Members(group string) []string {
	if g == nil {
		return nil
	}
	g.mu.RLock()
	out := make([]string, 0, len(g.members[group]))
	for v := range g.members[group] {
		out = append(out, v)
	}
	g.mu.RUnlock()
	if len(out) == 0 {
		return nil
	}
	slices.Sort(out)
	return out
}

// Known reports whether vehicle is in the registry (registered, with or without groups).
func (g *Groups) Known(vehicle string) bool {
	if g == nil {
		return false
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	_, ok := g.of[vehicle]
	return ok
}

// Visible reports whether p may see vehicle.
func (g *Groups) Visible(p *Principal, vehicle string) bool {
	if !p.Scoped() {
		return true
	}
	return p.SeesGroups(g.Of(vehicle))
}

type groupsKey struct{}

// VehicleVisible reports whether the calling principal may see vehicle, for the few edge
// handlers that address a vehicle's data by another id (an alert id) and must check before
// changing anything. True when the server runs without authentication.
func VehicleVisible(ctx context.Context, vehicle string) bool {
	p := FromContext(ctx)
	if !p.Scoped() {
		return true
	}
	g, _ := ctx.Value(groupsKey{}).(*Groups)
	return g.Visible(p, vehicle)
}
