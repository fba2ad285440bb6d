package geofence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/storeguard"
	"github.com/fleetwire/fleetwire/services/geofence/fence"
)

// Update is one vehicle's new state and the zones it entered and left since the stored
// one, so a store can keep a zone → vehicles index without reading the old state.
type Update struct {
	State   fence.State
	Entered []string
	Left    []string
}

// ErrCorruptState is returned by a Store for a stored state it cannot decode.
var ErrCorruptState = errors.New("stored membership state cannot be decoded")

// CorruptStateError names the vehicle whose stored state is unreadable.
type CorruptStateError struct {
	Vehicle string
	Err     error
}

func (e *CorruptStateError) Error() string {
	return fmt.Sprintf("state of %s: %v: %v", e.Vehicle, ErrCorruptState, e.Err)
}

// Is makes errors.Is(err, ErrCorruptState) true.
func (e *CorruptStateError) Is(target error) bool { return target == ErrCorruptState }

// Unwrap returns the decoder's error.
func (e *CorruptStateError) Unwrap() error { return e.Err }

// Store persists per-vehicle zone membership, so a restarted service neither re-fires
// enters nor forgets who was inside. Saving the same update twice must be harmless.
type Store interface {
	// Load returns the stored states of vehicles; a vehicle never saved is absent. A
	// state that cannot be decoded is an error (*CorruptStateError), never "absent".
	Load(ctx context.Context, vehicles []string) (map[string]fence.State, error)
	// Save writes the updates (all or, on error, possibly some: they are idempotent).
	Save(ctx context.Context, updates []Update) error
	// VehiclesInZone lists the vehicles inside zone, ordered by id.
	VehiclesInZone(ctx context.Context, zone string) ([]string, error)
	// ForgetZone drops the zone → vehicles index of a deleted zone.
	ForgetZone(ctx context.Context, zone string) error
}

// MemoryStore keeps membership in the process (the embedded default; with
// Config.Rebuild the state is rebuilt from the retained stream at start).
type MemoryStore struct {
	mu     sync.RWMutex
	states map[string]fence.State
	zones  map[string]map[string]struct{}
}

// NewMemoryStore returns an empty in-memory store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{states: map[string]fence.State{}, zones: map[string]map[string]struct{}{}}
}

// Load implements Store.
func (m *MemoryStore) Load(_ context.Context, vehicles []string) (map[string]fence.State, error) {
	out := make(map[string]fence.State, len(vehicles))
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, v := range vehicles {
		if st, ok := m.states[v]; ok {
			out[v] = st.Clone()
		}
	}
	return out, nil
}

// Save implements Store.
func (m *MemoryStore) Save(_ context.Context, updates []Update) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range updates {
		v := u.State.Vehicle
		m.states[v] = u.State.Clone()
		for _, z := range u.Entered {
			set := m.zones[z]
			if set == nil {
				set = map[string]struct{}{}
				m.zones[z] = set
			}
			set[v] = struct{}{}
		}
		for _, z := range u.Left {
			delete(m.zones[z], v)
		}
	}
	return nil
}

// VehiclesInZone implements Store.
func (m *MemoryStore) VehiclesInZone(_ context.Context, zone string) ([]string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]string, 0, len(m.zones[zone]))
	for v := range m.zones[zone] {
		out = append(out, v)
	}
	slices.Sort(out)
	return out, nil
}

// ForgetZone implements Store.
func (m *MemoryStore) ForgetZone(_ context.Context, zone string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.zones, zone)
	return nil
}

// RedisStore keeps membership in Redis: one JSON blob per vehicle (one SET is cheaper
// than a hash of fields) and one set of vehicles per zone.
//
//	<prefix>gf:v:<vehicle>  state
//	<prefix>gf:z:<zone>     set of vehicle ids inside
//
// With a fence (WithFence) every Load and Save checks the store's generation marker in
// its own transaction: a store that came back empty refuses both, so no event is raised
// from an emptied state and no membership is written into it.
type RedisStore struct {
	c      *redis.Client
	prefix string
	fence  *storeguard.Fence
}

// NewRedisStore returns a store using c with keys under prefix (e.g. "fw:").
func NewRedisStore(c *redis.Client, prefix string) *RedisStore {
	return &RedisStore{c: c, prefix: prefix}
}

// WithFence makes the store's reads and writes check the generation marker (see
// storeguard.Fence) and returns the store.
func (r *RedisStore) WithFence(f *storeguard.Fence) *RedisStore {
	r.fence = f
	return r
}

func (r *RedisStore) vehicleKey(v string) string { return r.prefix + "gf:v:" + v }
func (r *RedisStore) zoneKey(z string) string    { return r.prefix + "gf:z:" + z }

// KeyPrefix is the prefix of every key the store writes: a wipe of it (pkg/storeguard,
// after the store lost its data) leaves nothing of the service behind.
func (r *RedisStore) KeyPrefix() string { return r.prefix + "gf:" }

// Load implements Store.
func (r *RedisStore) Load(ctx context.Context, vehicles []string) (map[string]fence.State, error) {
	out := make(map[string]fence.State, len(vehicles))
	if len(vehicles) == 0 {
		return out, nil
	}
	keys := make([]string, len(vehicles))
	for i, v := range vehicles {
		keys[i] = r.vehicleKey(v)
	}
	var mget *redis.SliceCmd
	err := r.fence.Read(ctx, r.c, func(p redis.Pipeliner) error {
		mget = p.MGet(ctx, keys...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load geofence state: %w", err)
	}
	vals, err := mget.Result()
	if err != nil {
		return nil, fmt.Errorf("load geofence state: %w", err)
	}
	for i, val := range vals {
		s, ok := val.(string)
		if !ok {
			continue
		}
		var st fence.State
		if err := json.Unmarshal([]byte(s), &st); err != nil {
			// Not "no state": starting over would re-fire the enters of every zone the
			// vehicle is in. The service refuses the vehicle's input (dead letter, alert).
			return nil, &CorruptStateError{Vehicle: vehicles[i], Err: err}
		}
		out[vehicles[i]] = st
	}
	return out, nil
}

// Save implements Store. The writes of one call go in one MULTI, so a reader never sees
// a vehicle's state without the matching zone sets.
func (r *RedisStore) Save(ctx context.Context, updates []Update) error {
	if len(updates) == 0 {
		return nil
	}
	err := r.fence.Write(ctx, r.c, func(p redis.Pipeliner) error {
		for _, u := range updates {
			b, err := json.Marshal(u.State)
			if err != nil {
				return fmt.Errorf("encode state of %s: %w", u.State.Vehicle, err)
			}
			p.Set(ctx, r.vehicleKey(u.State.Vehicle), b, 0)
			for _, z := range u.Entered {
				p.SAdd(ctx, r.zoneKey(z), u.State.Vehicle)
			}
			for _, z := range u.Left {
				p.SRem(ctx, r.zoneKey(z), u.State.Vehicle)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save geofence state: %w", err)
	}
	return nil
}

// VehiclesInZone implements Store.
func (r *RedisStore) VehiclesInZone(ctx context.Context, zone string) ([]string, error) {
	vs, err := r.c.SMembers(ctx, r.zoneKey(zone)).Result()
	if err != nil {
		return nil, fmt.Errorf("vehicles in zone %s: %w", zone, err)
	}
	slices.Sort(vs)
	return vs, nil
}

// ForgetZone implements Store.
func (r *RedisStore) ForgetZone(ctx context.Context, zone string) error {
	if err := r.c.Del(ctx, r.zoneKey(zone)).Err(); err != nil {
		return fmt.Errorf("forget zone %s: %w", zone, err)
	}
	return nil
}

// diff returns the zone ids in after and not in before, and in before and not in after.
func diff(before, after []fence.Membership) (entered, left []string) {
	has := func(ms []fence.Membership, id string) bool {
		for i := range ms {
			if ms[i].ZoneID == id {
				return true
			}
		}
		return false
	}
	for _, m := range after {
		if !has(before, m.ZoneID) {
			entered = append(entered, m.ZoneID)
		}
	}
	for _, m := range before {
		if !has(after, m.ZoneID) {
			left = append(left, m.ZoneID)
		}
	}
	return entered, left
}
