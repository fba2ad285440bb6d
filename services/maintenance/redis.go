package maintenance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/storeguard"
	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
)

// RedisStore keeps the service's state in Redis, as JSON values under a key prefix:
//
//	<p>plan:<id>            plan               <p>plans           set of plan ids
//	<p>group:<id>           group              <p>groups          set of group ids
//	<p>svc:<vehicle>        hash id → entry    <p>svclast:<vehicle> hash plan → latest entry
//	<p>veh:<vehicle>        vehicle state      <p>vehs            set of vehicle ids
//	<p>fprof:<vehicle>      fuel profile
//	<p>fev:<vehicle>        hash id → event    <p>fevt:<vehicle>  zset id by start (ms)
//	<p>fs:<vehicle>         zset of samples by time (ms), member = encoded sample
//
// Fuel samples older than SampleRetention are trimmed when new ones are added.
type RedisStore struct {
	c      *redis.Client
	prefix string
	// SampleRetention bounds the fuel history kept for reports (400 days).
	SampleRetention time.Duration

	fence *storeguard.Fence
}

// NewRedisStore returns a store using c with keys under prefix (e.g. "fw:").
func NewRedisStore(c *redis.Client, prefix string) *RedisStore {
	return &RedisStore{c: c, prefix: prefix + "mnt:", SampleRetention: 400 * 24 * time.Hour}
}

// WithFence makes the store's batch reads and writes of vehicle states check the
// generation marker (see storeguard.Fence) and returns the store.
func (r *RedisStore) WithFence(f *storeguard.Fence) *RedisStore {
	r.fence = f
	return r
}

// KeyPrefix is the prefix of every key the store writes: a wipe of it (pkg/storeguard,
// after the store lost its data) leaves nothing of the service behind.
func (r *RedisStore) KeyPrefix() string { return r.prefix }

func (r *RedisStore) k(parts ...string) string {
	s := r.prefix
	for i, p := range parts {
		if i > 0 {
			s += ":"
		}
		s += p
	}
	return s
}

func getJSON[T any](ctx context.Context, c *redis.Client, key string) (T, error) {
	var v T
	b, err := c.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return v, ErrNotFound
	}
	if err != nil {
		return v, err
	}
	return v, json.Unmarshal(b, &v)
}

func (r *RedisStore) PutPlan(ctx context.Context, p Plan) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = r.c.TxPipelined(ctx, func(pp redis.Pipeliner) error {
		pp.Set(ctx, r.k("plan", p.ID), b, 0)
		pp.SAdd(ctx, r.k("plans"), p.ID)
		return nil
	})
	return err
}

func (r *RedisStore) GetPlan(ctx context.Context, id string) (Plan, error) {
	return getJSON[Plan](ctx, r.c, r.k("plan", id))
}

func (r *RedisStore) DeletePlan(ctx context.Context, id string) error {
	n, err := r.c.Del(ctx, r.k("plan", id)).Result()
	if err != nil {
		return err
	}
	if err := r.c.SRem(ctx, r.k("plans"), id).Err(); err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// listJSON reads every value whose id is in the set key, ordered by id.
func listJSON[T any](ctx context.Context, r *RedisStore, set, kind string) ([]T, error) {
	ids, err := r.c.SMembers(ctx, r.k(set)).Result()
	if err != nil {
		return nil, err
	}
	sort.Strings(ids)
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = r.k(kind, id)
	}
	vals, err := r.c.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(vals))
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // removed between SMEMBERS and MGET
		}
		var x T
		if err := json.Unmarshal([]byte(s), &x); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kind, err)
		}
		out = append(out, x)
	}
	return out, nil
}

func (r *RedisStore) ListPlans(ctx context.Context) ([]Plan, error) {
	return listJSON[Plan](ctx, r, "plans", "plan")
}

func (r *RedisStore) PutGroup(ctx context.Context, g Group) error {
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	_, err = r.c.TxPipelined(ctx, func(pp redis.Pipeliner) error {
		pp.Set(ctx, r.k("group", g.ID), b, 0)
		pp.SAdd(ctx, r.k("groups"), g.ID)
		return nil
	})
	return err
}

func (r *RedisStore) GetGroup(ctx context.Context, id string) (Group, error) {
	return getJSON[Group](ctx, r.c, r.k("group", id))
}

func (r *RedisStore) ListGroups(ctx context.Context) ([]Group, error) {
	return listJSON[Group](ctx, r, "groups", "group")
}

// latestScript keeps, per plan, the entry with the latest time (then the greatest id),
// atomically, so concurrent RecordService calls cannot leave an older entry as latest.
var latestScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local c = cjson.decode(cur)
  local t = tonumber(ARGV[3])
  local ct = tonumber(c['_ms'] or 0)
  if c['id'] ~= ARGV[4] and (ct > t or (ct == t and c['id'] > ARGV[4])) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1`)

// redisService is ServiceEntry with its time in milliseconds for the script.
type redisService struct {
	ServiceEntry
	MS int64 `json:"_ms"`
}

func (r *RedisStore) AddService(ctx context.Context, e ServiceEntry) error {
	b, err := json.Marshal(redisService{ServiceEntry: e, MS: e.Time.UnixMilli()})
	if err != nil {
		return err
	}
	if err := r.c.HSet(ctx, r.k("svc", e.VehicleID), e.ID, b).Err(); err != nil {
		return err
	}
	if e.PlanID == "" {
		return nil
	}
	return latestScript.Run(ctx, r.c, []string{r.k("svclast", e.VehicleID)}, e.PlanID, b, e.Time.UnixMilli(), e.ID).Err()
}

func decodeServices(vals []string) ([]ServiceEntry, error) {
	out := make([]ServiceEntry, 0, len(vals))
	for _, v := range vals {
		var e redisService
		if err := json.Unmarshal([]byte(v), &e); err != nil {
			return nil, fmt.Errorf("decode service: %w", err)
		}
		out = append(out, e.ServiceEntry)
	}
	return out, nil
}

func (r *RedisStore) ListServices(ctx context.Context, vehicle string) ([]ServiceEntry, error) {
	vals, err := r.c.HVals(ctx, r.k("svc", vehicle)).Result()
	if err != nil {
		return nil, err
	}
	out, err := decodeServices(vals)
	if err != nil {
		return nil, err
	}
	sortServices(out)
	return out, nil
}

func (r *RedisStore) LatestServices(ctx context.Context, vehicles []string) (map[string]map[string]ServiceEntry, error) {
	out := map[string]map[string]ServiceEntry{}
	if len(vehicles) == 0 {
		return out, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(vehicles))
	if _, err := r.c.Pipelined(ctx, func(pp redis.Pipeliner) error {
		for i, v := range vehicles {
			cmds[i] = pp.HGetAll(ctx, r.k("svclast", v))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for i, cmd := range cmds {
		m := cmd.Val()
		if len(m) == 0 {
			continue
		}
		byPlan := make(map[string]ServiceEntry, len(m))
		for plan, v := range m {
			var e redisService
			if err := json.Unmarshal([]byte(v), &e); err != nil {
				return nil, fmt.Errorf("decode service: %w", err)
			}
			byPlan[plan] = e.ServiceEntry
		}
		out[vehicles[i]] = byPlan
	}
	return out, nil
}

func (r *RedisStore) GetVehicles(ctx context.Context, ids []string) (map[string]*VehicleState, error) {
	out := make(map[string]*VehicleState, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = r.k("veh", id)
	}
	var mget *redis.SliceCmd
	if err := r.fence.Read(ctx, r.c, func(pp redis.Pipeliner) error {
		mget = pp.MGet(ctx, keys...)
		return nil
	}); err != nil {
		return nil, err
	}
	vals, err := mget.Result()
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var st VehicleState
		if err := json.Unmarshal([]byte(s), &st); err != nil {
			return nil, fmt.Errorf("decode vehicle %s: %w", ids[i], err)
		}
		out[ids[i]] = &st
	}
	return out, nil
}

func (r *RedisStore) PutVehicles(ctx context.Context, vs []*VehicleState) error {
	if len(vs) == 0 {
		return nil
	}
	return r.fence.Write(ctx, r.c, func(pp redis.Pipeliner) error {
		ids := make([]any, 0, len(vs))
		for _, v := range vs {
			b, err := json.Marshal(v)
			if err != nil {
				return err
			}
			pp.Set(ctx, r.k("veh", v.VehicleID), b, 0)
			ids = append(ids, v.VehicleID)
		}
		pp.SAdd(ctx, r.k("vehs"), ids...)
		return nil
	})
}

func (r *RedisStore) ListVehicleIDs(ctx context.Context) ([]string, error) {
	ids, err := r.c.SMembers(ctx, r.k("vehs")).Result()
	if err != nil {
		return nil, err
	}
	sort.Strings(ids)
	return ids, nil
}

func (r *RedisStore) PutFuelProfile(ctx context.Context, vehicle string, p fuel.Profile) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return r.c.Set(ctx, r.k("fprof", vehicle), b, 0).Err()
}

func (r *RedisStore) GetFuelProfiles(ctx context.Context, ids []string) (map[string]fuel.Profile, error) {
	out := map[string]fuel.Profile{}
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = r.k("fprof", id)
	}
	vals, err := r.c.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var p fuel.Profile
		if err := json.Unmarshal([]byte(s), &p); err != nil {
			return nil, fmt.Errorf("decode fuel profile %s: %w", ids[i], err)
		}
		out[ids[i]] = p
	}
	return out, nil
}

func (r *RedisStore) AddFuelEvents(ctx context.Context, evs []FuelEvent) error {
	_, err := r.c.Pipelined(ctx, func(pp redis.Pipeliner) error {
		for _, e := range evs {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			pp.HSet(ctx, r.k("fev", e.VehicleID), e.ID, b)
			pp.ZAdd(ctx, r.k("fevt", e.VehicleID), redis.Z{Score: float64(e.Start.UnixMilli()), Member: e.ID})
		}
		return nil
	})
	return err
}

func (r *RedisStore) ListFuelEvents(ctx context.Context, vehicle string, from, to time.Time) ([]FuelEvent, error) {
	ids, err := r.c.ZRangeByScore(ctx, r.k("fevt", vehicle), &redis.ZRangeBy{
		Min: strconv.FormatInt(from.UnixMilli(), 10), Max: "(" + strconv.FormatInt(to.UnixMilli(), 10),
	}).Result()
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	vals, err := r.c.HMGet(ctx, r.k("fev", vehicle), ids...).Result()
	if err != nil {
		return nil, err
	}
	var out []FuelEvent
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var e FuelEvent
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			return nil, fmt.Errorf("decode fuel event: %w", err)
		}
		out = append(out, e)
	}
	sortFuelEvents(out)
	return out, nil
}

func (r *RedisStore) AddFuelSamples(ctx context.Context, byVehicle map[string][]FuelSample) error {
	if len(byVehicle) == 0 {
		return nil
	}
	_, err := r.c.Pipelined(ctx, func(pp redis.Pipeliner) error {
		for vehicle, ss := range byVehicle {
			if err := r.addSamples(ctx, pp, vehicle, ss); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}

func (r *RedisStore) addSamples(ctx context.Context, pp redis.Pipeliner, vehicle string, ss []FuelSample) error {
	if len(ss) == 0 {
		return nil
	}
	key := r.k("fs", vehicle)
	for _, s := range ss {
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		ms := strconv.FormatInt(s.Time.UnixMilli(), 10)
		// One sample per instant: a replayed batch replaces, never duplicates.
		pp.ZRemRangeByScore(ctx, key, ms, ms)
		pp.ZAdd(ctx, key, redis.Z{Score: float64(s.Time.UnixMilli()), Member: b})
	}
	if r.SampleRetention > 0 {
		cut := ss[len(ss)-1].Time.Add(-r.SampleRetention).UnixMilli()
		pp.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatInt(cut, 10))
	}
	return nil
}

func (r *RedisStore) ListFuelSamples(ctx context.Context, vehicle string, from, to time.Time) ([]FuelSample, error) {
	key := r.k("fs", vehicle)
	before, err := r.c.ZRevRangeByScore(ctx, key, &redis.ZRangeBy{
		Max: "(" + strconv.FormatInt(from.UnixMilli(), 10), Min: "-inf", Count: 1,
	}).Result()
	if err != nil {
		return nil, err
	}
	in, err := r.c.ZRangeByScore(ctx, key, &redis.ZRangeBy{
		Min: strconv.FormatInt(from.UnixMilli(), 10), Max: strconv.FormatInt(to.UnixMilli(), 10),
	}).Result()
	if err != nil {
		return nil, err
	}
	out := make([]FuelSample, 0, len(before)+len(in))
	for _, v := range append(before, in...) {
		var s FuelSample
		if err := json.Unmarshal([]byte(v), &s); err != nil {
			return nil, fmt.Errorf("decode fuel sample: %w", err)
		}
		out = append(out, s)
	}
	return out, nil
}
