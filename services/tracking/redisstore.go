package tracking

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/storeguard"
)

// RedisStore keeps the tracking data in Redis, shared by every tracking instance:
//
//	<prefix>trk:s:<id>          state blob (codec.go), one SET per update
//	<prefix>trk:i:<id>          registry entry (JSON)
//	<prefix>trk:ids             sorted set of every vehicle id (score 0, ordered by id)
//	<prefix>trk:geo             GEO set of last fixes for nearest search
//	<prefix>trk:polar           set of vehicles beyond Redis GEO's ±85.05° latitude limit
//	<prefix>trk:h:<id>:<day>    history of one UTC day: sorted set, score = device time
//	                            (ms), member = encoded fix; expires at day end + retention
//
// All writes of a batch go out in one MULTI/EXEC. Every write is idempotent (SET of the
// same state, ZADD of the same member), so a redelivered batch changes nothing. With a
// fence (WithFence) the batch's reads and writes check the store's generation marker in
// the same transaction: a store that came back empty refuses them.
type RedisStore struct {
	c      *redis.Client
	prefix string
	fence  *storeguard.Fence
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a store using c, with every key under prefix (e.g. "fw:").
func NewRedisStore(c *redis.Client, prefix string) *RedisStore {
	return &RedisStore{c: c, prefix: prefix + "trk:"}
}

// WithFence makes the store's batch reads and writes check the generation marker (see
// storeguard.Fence) and returns the store.
func (s *RedisStore) WithFence(f *storeguard.Fence) *RedisStore {
	s.fence = f
	return s
}

// KeyPrefix is the prefix of every key the store writes: a wipe of it (pkg/storeguard,
// after the store lost its data) leaves nothing of the service behind.
func (s *RedisStore) KeyPrefix() string { return s.prefix }

// geoMaxLat is the latitude limit of Redis GEO (Web Mercator).
const geoMaxLat = 85.05112878

func (s *RedisStore) stateKey(id string) string { return s.prefix + "s:" + id }
func (s *RedisStore) infoKey(id string) string  { return s.prefix + "i:" + id }
func (s *RedisStore) idsKey() string            { return s.prefix + "ids" }
func (s *RedisStore) geoKey() string            { return s.prefix + "geo" }
func (s *RedisStore) polarKey() string          { return s.prefix + "polar" }
func (s *RedisStore) histKey(id string, day time.Time) string {
	return s.prefix + "h:" + id + ":" + day.Format("20060102")
}

// Write stores one batch in a single MULTI/EXEC; with a fence, only while the store's
// generation marker is the one the process works against.
func (s *RedisStore) Write(ctx context.Context, b Batch) error {
	if len(b.States) == 0 && len(b.Points) == 0 && len(b.Removed) == 0 {
		return nil
	}
	err := s.fence.Write(ctx, s.c, func(pipe redis.Pipeliner) error {
		for _, st := range b.States {
			// Each command keeps its own buffer: the pipeline sends them only at Exec.
			pipe.Set(ctx, s.stateKey(st.VehicleID), encodeState(make([]byte, 0, 256), st), 0)
			pipe.ZAddNX(ctx, s.idsKey(), redis.Z{Member: st.VehicleID})
			if st.HasFix {
				if math.Abs(st.Fix.Lat) <= geoMaxLat {
					pipe.GeoAdd(ctx, s.geoKey(), &redis.GeoLocation{Name: st.VehicleID, Longitude: st.Fix.Lon, Latitude: st.Fix.Lat})
					pipe.SRem(ctx, s.polarKey(), st.VehicleID)
				} else {
					pipe.ZRem(ctx, s.geoKey(), st.VehicleID)
					pipe.SAdd(ctx, s.polarKey(), st.VehicleID)
				}
			}
		}
		cutoff := b.Now.Add(-b.Retention)
		expire := map[string]time.Time{}
		for i := range b.Points {
			p := &b.Points[i]
			if b.Retention > 0 && p.Time.Before(cutoff) {
				continue
			}
			day := p.Time.UTC().Truncate(24 * time.Hour)
			k := s.histKey(p.VehicleID, day)
			pipe.ZAdd(ctx, k, redis.Z{Score: float64(p.Time.UnixMilli()), Member: encodeFix(nil, &p.Fix)})
			if _, ok := expire[k]; !ok {
				expire[k] = day.Add(24*time.Hour + b.Retention)
			}
		}
		for i := range b.Removed {
			p := &b.Removed[i]
			// History members encode the whole fix, so the same fix removes the same member.
			pipe.ZRem(ctx, s.histKey(p.VehicleID, p.Time.UTC().Truncate(24*time.Hour)), encodeFix(nil, &p.Fix))
		}
		if b.Retention > 0 {
			for k, at := range expire {
				pipe.ExpireAt(ctx, k, at)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis write batch: %w", err)
	}
	return nil
}

// States returns the stored states of ids.
func (s *RedisStore) States(ctx context.Context, ids []string) ([]*State, error) {
	out := make([]*State, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.stateKey(id)
	}
	var mget *redis.SliceCmd
	err := s.fence.Read(ctx, s.c, func(p redis.Pipeliner) error {
		mget = p.MGet(ctx, keys...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redis get states: %w", err)
	}
	vals, err := mget.Result()
	if err != nil {
		return nil, fmt.Errorf("redis get states: %w", err)
	}
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		st, err := decodeState([]byte(str))
		if err != nil {
			return nil, fmt.Errorf("state of %s: %w", ids[i], err)
		}
		out[i] = st
	}
	return out, nil
}

type infoJSON struct {
	Name     string            `json:"name,omitempty"`
	Plate    string            `json:"plate,omitempty"`
	Groups   []string          `json:"groups,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Vehicles returns info and state for ids.
func (s *RedisStore) Vehicles(ctx context.Context, ids []string) ([]Vehicle, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, 2*len(ids))
	for _, id := range ids {
		keys = append(keys, s.infoKey(id), s.stateKey(id))
	}
	vals, err := s.c.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis get vehicles: %w", err)
	}
	out := make([]Vehicle, 0, len(ids))
	for i, id := range ids {
		v := Vehicle{Info: Info{ID: id}}
		info, hasInfo := vals[2*i].(string)
		blob, hasState := vals[2*i+1].(string)
		if !hasInfo && !hasState {
			continue
		}
		if hasInfo {
			var ij infoJSON
			if err := json.Unmarshal([]byte(info), &ij); err != nil {
				return nil, fmt.Errorf("info of %s: %w: %v", id, ErrCorrupt, err)
			}
			v.Info = Info{ID: id, Name: ij.Name, Plate: ij.Plate, Groups: ij.Groups, Metadata: ij.Metadata, Registered: true}
		}
		if hasState {
			st, err := decodeState([]byte(blob))
			if err != nil {
				return nil, fmt.Errorf("state of %s: %w", id, err)
			}
			v.State = st
		}
		out = append(out, v)
	}
	return out, nil
}

// IDs returns sorted ids after after.
func (s *RedisStore) IDs(ctx context.Context, after string, limit int) ([]string, error) {
	min := "-"
	if after != "" {
		min = "(" + after
	}
	ids, err := s.c.ZRangeByLex(ctx, s.idsKey(), &redis.ZRangeBy{Min: min, Max: "+", Count: int64(limit)}).Result()
	if err != nil {
		return nil, fmt.Errorf("redis list ids: %w", err)
	}
	return ids, nil
}

// Count returns the number of vehicles.
func (s *RedisStore) Count(ctx context.Context) (int, error) {
	n, err := s.c.ZCard(ctx, s.idsKey()).Result()
	if err != nil {
		return 0, fmt.Errorf("redis count: %w", err)
	}
	return int(n), nil
}

func (s *RedisStore) putInfo(ctx context.Context, info Info, nx bool) (bool, error) {
	data, err := json.Marshal(infoJSON{Name: info.Name, Plate: info.Plate, Groups: info.Groups, Metadata: info.Metadata})
	if err != nil {
		return false, fmt.Errorf("encode info: %w", err)
	}
	var ok bool
	if nx {
		ok, err = s.c.SetNX(ctx, s.infoKey(info.ID), data, 0).Result()
	} else {
		ok, err = s.c.SetXX(ctx, s.infoKey(info.ID), data, 0).Result()
	}
	if err != nil {
		return false, fmt.Errorf("redis put info %s: %w", info.ID, err)
	}
	if ok {
		if err := s.c.ZAddNX(ctx, s.idsKey(), redis.Z{Member: info.ID}).Err(); err != nil {
			return false, fmt.Errorf("redis index %s: %w", info.ID, err)
		}
	}
	return ok, nil
}

// Delete removes vehicles; see Store. Their history keys expire with the retention.
func (s *RedisStore) Delete(ctx context.Context, ids []string, histFrom, histTo time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	if histTo.Sub(histFrom) > 400*24*time.Hour {
		return fmt.Errorf("%w: history window longer than 400 days", ErrInvalid)
	}
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.Del(ctx, s.stateKey(id), s.infoKey(id))
			// History is one key per UTC day: the window's days name them all.
			for day := histFrom.UTC().Truncate(24 * time.Hour); !day.After(histTo); day = day.Add(24 * time.Hour) {
				p.Del(ctx, s.histKey(id, day))
			}
			p.ZRem(ctx, s.idsKey(), id)
			p.ZRem(ctx, s.geoKey(), id)
			p.SRem(ctx, s.polarKey(), id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis delete vehicles: %w", err)
	}
	return nil
}

// Register adds a vehicle to the registry.
func (s *RedisStore) Register(ctx context.Context, info Info) error {
	ok, err := s.putInfo(ctx, info, true)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("register %s: %w", info.ID, ErrAlreadyExists)
	}
	return nil
}

// Update replaces a registered vehicle's info.
func (s *RedisStore) Update(ctx context.Context, info Info) error {
	ok, err := s.putInfo(ctx, info, false)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("update %s: %w", info.ID, ErrNotFound)
	}
	return nil
}

// Nearest runs GEOSEARCH with a growing radius and candidate count, then re-ranks the
// candidates by the exact great-circle distance of their stored fixes (Redis uses its own
// Earth radius and 52-bit geohash positions). Vehicles beyond ±85.05° latitude, which Redis
// GEO cannot hold, are kept in a small set and checked one by one.
func (s *RedisStore) Nearest(ctx context.Context, q NearestQuery) ([]Nearby, error) {
	if q.K <= 0 {
		return nil, nil
	}
	const halfEarthM = math.Pi * geo.EarthRadiusM
	limit := q.RadiusM
	if limit <= 0 || limit > halfEarthM {
		limit = halfEarthM
	}
	radius := math.Min(limit, 5000)
	count := max(4*q.K, 64)
	polar, err := s.c.SMembers(ctx, s.polarKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("redis polar set: %w", err)
	}
	for {
		ids := append([]string(nil), polar...)
		bound := radius
		truncated := false
		for _, c := range searchCentres(q.Point, radius) {
			// Redis's sphere is slightly larger than ours: widen the search a little, then
			// cut by the exact distance.
			res, err := s.c.GeoSearchLocation(ctx, s.geoKey(), &redis.GeoSearchLocationQuery{
				GeoSearchQuery: redis.GeoSearchQuery{
					Longitude: c.p.Lon, Latitude: c.p.Lat,
					Radius: (radius+c.extraM)*redisEarthRatio + 1, RadiusUnit: "m",
					Sort: "ASC", Count: count,
				},
				WithDist: true,
			}).Result()
			if err != nil {
				return nil, fmt.Errorf("redis geosearch: %w", err)
			}
			for _, r := range res {
				ids = append(ids, r.Name)
			}
			// A truncated answer holds the nearest candidates only up to the last one it
			// returned; beyond that distance (less a margin for Redis's geohash rounding
			// and the centre's offset) nothing is known yet.
			if len(res) == count {
				truncated = true
				bound = math.Min(bound, res[len(res)-1].Dist/redisEarthRatio-1-c.extraM)
			}
		}
		found, err := s.rank(ctx, q, ids, bound)
		if err != nil {
			return nil, err
		}
		switch {
		case len(found) >= q.K:
			return found[:q.K], nil
		case truncated:
			count *= 4
		case radius >= limit:
			return found, nil
		default:
			radius = math.Min(limit, radius*8)
		}
	}
}

type searchCentre struct {
	p      geo.Point
	extraM float64 // distance from the query point: added to the radius
}

// searchCentres returns the GEOSEARCH centres that together cover the circle of radiusM
// around p. Redis GEO refuses latitudes beyond ±85.05°, so a polar query point is moved
// onto that limit (and the radius grows by the move); Redis's radius search does not
// wrap across ±180°, so a circle that crosses it is also searched from the other side's
// edge. Every vehicle in the circle lies within some centre's grown radius (triangle
// inequality); rank cuts the candidates by exact distance.
func searchCentres(p geo.Point, radiusM float64) []searchCentre {
	c := p
	c.Lat = math.Max(-geoMaxLat, math.Min(geoMaxLat, c.Lat))
	if c.Lon >= 180 {
		c.Lon = 179.9999999
	}
	out := []searchCentre{{p: c, extraM: geo.DistanceM(p, c)}}
	b := geo.BoundsAround(p, radiusM)
	if b.CrossesAntimeridian() || (b.MinLon == -180 && b.MaxLon == 180) {
		m := c
		if p.Lon >= 0 {
			m.Lon = -179.9999999
		} else {
			m.Lon = 179.9999999
		}
		out = append(out, searchCentre{p: m, extraM: geo.DistanceM(p, m)})
	}
	return out
}

// redisEarthRatio is Redis GEO's Earth radius over ours: its distances are this much longer.
const redisEarthRatio = 6372797.560856 / geo.EarthRadiusM

// rank loads the candidates, applies the filter and sorts by exact distance.
func (s *RedisStore) rank(ctx context.Context, q NearestQuery, ids []string, radius float64) ([]Nearby, error) {
	seen := make(map[string]bool, len(ids))
	uniq := ids[:0:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			uniq = append(uniq, id)
		}
	}
	vs, err := s.Vehicles(ctx, uniq)
	if err != nil {
		return nil, err
	}
	out := make([]Nearby, 0, len(vs))
	for i := range vs {
		v := &vs[i]
		if v.State == nil || !v.State.HasFix {
			continue
		}
		d := geo.DistanceM(q.Point, v.State.Fix.Point())
		if d > radius {
			continue
		}
		if q.Accept != nil && !q.Accept(v) {
			continue
		}
		out = append(out, Nearby{Vehicle: *v, DistanceM: d})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].DistanceM < out[j].DistanceM })
	return out, nil
}

// Track returns the fixes in [from, to], reading one sorted set per UTC day.
func (s *RedisStore) Track(ctx context.Context, vehicle string, from, to time.Time) ([]Fix, error) {
	if to.Before(from) {
		return nil, nil
	}
	pipe := s.c.Pipeline()
	var cmds []*redis.StringSliceCmd
	minS, maxS := strconv.FormatInt(from.UnixMilli(), 10), strconv.FormatInt(to.UnixMilli(), 10)
	for day := from.UTC().Truncate(24 * time.Hour); !day.After(to); day = day.Add(24 * time.Hour) {
		cmds = append(cmds, pipe.ZRangeByScore(ctx, s.histKey(vehicle, day), &redis.ZRangeBy{Min: minS, Max: maxS}))
		if len(cmds) > 400 {
			return nil, fmt.Errorf("%w: track range longer than 400 days", ErrInvalid)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redis track %s: %w", vehicle, err)
	}
	var out []Fix
	for _, c := range cmds {
		for _, m := range c.Val() {
			f, err := decodeFix([]byte(m))
			if err != nil {
				return nil, fmt.Errorf("track of %s: %w", vehicle, err)
			}
			if f.Time.Before(from) || f.Time.After(to) {
				continue // the score has millisecond precision
			}
			out = append(out, f)
		}
	}
	// Members with equal scores sort by their bytes, not by sequence: restore the order.
	sort.SliceStable(out, func(i, j int) bool { return fixBefore(&out[i], &out[j]) })
	return out, nil
}
