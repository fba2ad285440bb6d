package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/storeguard"
)

// RedisStore keeps the dispatch state in Redis, shared by every tracking instance.
//
// Keys under the prefix:
//
//	dispatch:alert:seq            INCR counter of alert ids
//	dispatch:alert:<id>           alert (JSON)
//	dispatch:incident:<key>       newest alert id of an incident
//	dispatch:cause:<cause>        alert id a cause went into (expires after causeTTL)
//	dispatch:alerts:resolved      ZSET of resolved alert ids by resolve time (retention)
//	dispatch:alerts:deliver       SET of alert ids with a webhook delivery pending
//	dispatch:veh:<vehicle>        detection state (JSON)
//	dispatch:cmd:seq              INCR counter of command ids
//	dispatch:cmd:<id>             command (JSON)
//	dispatch:cmds                 ZSET of command ids by number
//	dispatch:cmds:veh:<vehicle>   ZSET of one vehicle's command ids
//	dispatch:cmds:open:<vehicle>  SET of a vehicle's open command ids
//	dispatch:cmds:open            SET of every open command id
//
// A new alert's id is taken and its record written in one Lua script, so readers
// walking ids upwards (WatchAlerts) never see a gap that is filled later.
type RedisStore struct {
	c     *redis.Client
	p     string
	fence *storeguard.Fence
}

// causeTTL is how long a cause id is remembered; redeliveries and replays come much sooner.
const causeTTL = 7 * 24 * time.Hour

// NewRedisStore returns a store using keys under prefix (e.g. "fw:").
func NewRedisStore(c *redis.Client, prefix string) *RedisStore {
	return &RedisStore{c: c, p: prefix + "dispatch:"}
}

// WithFence makes the store's batch reads and writes of vehicle states check the
// generation marker (see storeguard.Fence) and returns the store.
func (s *RedisStore) WithFence(f *storeguard.Fence) *RedisStore {
	s.fence = f
	return s
}

// KeyPrefix is the prefix of every key the store writes: a wipe of it (pkg/storeguard,
// after the store lost its data) leaves nothing of the service behind.
func (s *RedisStore) KeyPrefix() string { return s.p }

func (s *RedisStore) alertKey(id uint64) string   { return s.p + "alert:" + strconv.FormatUint(id, 10) }
func (s *RedisStore) incidentKey(k string) string { return s.p + "incident:" + k }
func (s *RedisStore) causeKey(c string) string    { return s.p + "cause:" + c }
func (s *RedisStore) vehicleKey(v string) string  { return s.p + "veh:" + v }
func (s *RedisStore) cmdKey(id string) string     { return s.p + "cmd:" + id }
func (s *RedisStore) cmdsVehKey(v string) string  { return s.p + "cmds:veh:" + v }
func (s *RedisStore) cmdsOpenKey(v string) string { return s.p + "cmds:open:" + v }
func (s *RedisStore) alertSeqKey() string         { return s.p + "alert:seq" }
func (s *RedisStore) cmdSeqKey() string           { return s.p + "cmd:seq" }
func (s *RedisStore) cmdsKey() string             { return s.p + "cmds" }
func (s *RedisStore) cmdsOpenAllKey() string      { return s.p + "cmds:open" }
func (s *RedisStore) resolvedKey() string         { return s.p + "alerts:resolved" }
func (s *RedisStore) deliverKey() string          { return s.p + "alerts:deliver" }

// insertAlert takes the next id and writes the alert, its incident and cause in one step.
// KEYS: seq, incident. ARGV: alert key prefix, json, cause key ("" for none), cause ttl s,
// the pending-deliveries set ("" when the alert has none).
const insertAlertLua = `
local id = redis.call('INCR', KEYS[1])
redis.call('SET', ARGV[1] .. id, ARGV[2])
redis.call('SET', KEYS[2], id)
if ARGV[3] ~= '' then redis.call('SET', ARGV[3], id, 'EX', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('SADD', ARGV[5], id) end
return id`

// pruneAlertsLua removes alerts resolved before a time, with the incident pointers that
// still name them. KEYS: the resolved ZSET. ARGV: cutoff (unix ms), limit, alert key
// prefix, incident key prefix.
const pruneAlertsLua = `
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local raw = redis.call('GET', ARGV[3] .. id)
  if raw then
    local ok, a = pcall(cjson.decode, raw)
    if ok and type(a) == 'table' and type(a.IncidentKey) == 'string' then
      local ik = ARGV[4] .. a.IncidentKey
      if redis.call('GET', ik) == id then redis.call('DEL', ik) end
    end
    redis.call('DEL', ARGV[3] .. id)
  end
  redis.call('ZREM', KEYS[1], id)
end
return #ids`

const maxRetries = 100

func (s *RedisStore) readAlert(ctx context.Context, g redis.Cmdable, id uint64) (Alert, error) {
	b, err := g.Get(ctx, s.alertKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Alert{}, fmt.Errorf("alert %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Alert{}, fmt.Errorf("get alert %d: %w", id, err)
	}
	return decodeAlert(id, b)
}

func decodeAlert(id uint64, b []byte) (Alert, error) {
	var a Alert
	if err := json.Unmarshal(b, &a); err != nil {
		return Alert{}, fmt.Errorf("decode alert %d: %w", id, err)
	}
	a.ID = id
	return a, nil
}

// RaiseAlert implements Store.
func (s *RedisStore) RaiseAlert(ctx context.Context, a Alert, cooldown time.Duration) (Alert, bool, error) {
	ck := ""
	if a.CauseID != "" {
		ck = s.causeKey(a.CauseID)
	}
	ik := s.incidentKey(a.IncidentKey)
	watch := []string{ik}
	if ck != "" {
		watch = append(watch, ck)
	}
	for range maxRetries {
		var (
			out     Alert
			created bool
		)
		err := s.c.Watch(ctx, func(tx *redis.Tx) error {
			// An alert merged into, or raised beside, an incident the emptied store no
			// longer knows would be a duplicate: the marker is checked in this transaction.
			if err := s.fence.CheckIn(ctx, tx); err != nil {
				return err
			}
			if ck != "" {
				id, err := tx.Get(ctx, ck).Uint64()
				if err == nil {
					out, err = s.readAlert(ctx, tx, id)
					if errors.Is(err, ErrNotFound) {
						// Seen before, but its alert was since deleted by an operator:
						// still a repeat, and not worth a retry loop.
						out, out.ID, err = a, id, nil
					}
					return err
				}
				if !errors.Is(err, redis.Nil) {
					return fmt.Errorf("get cause: %w", err)
				}
			}
			id, err := tx.Get(ctx, ik).Uint64()
			if err != nil && !errors.Is(err, redis.Nil) {
				return fmt.Errorf("get incident: %w", err)
			}
			if err == nil {
				// Watch the alert too: an operator may acknowledge it meanwhile.
				if err := tx.Watch(ctx, s.alertKey(id)).Err(); err != nil {
					return fmt.Errorf("watch alert: %w", err)
				}
				cur, err := s.readAlert(ctx, tx, id)
				if err != nil && !errors.Is(err, ErrNotFound) {
					return err
				}
				if err == nil && cur.mergeable(&a, cooldown) {
					cur.merge(&a)
					b, err := json.Marshal(cur)
					if err != nil {
						return fmt.Errorf("encode alert: %w", err)
					}
					_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
						p.Set(ctx, s.alertKey(id), b, 0)
						if ck != "" {
							p.Set(ctx, ck, id, causeTTL)
						}
						return nil
					})
					out = cur
					return err
				}
			}
			a.ID = 0
			b, err := json.Marshal(a)
			if err != nil {
				return fmt.Errorf("encode alert: %w", err)
			}
			dk := ""
			if a.pendingDelivery() {
				dk = s.deliverKey()
			}
			var ev *redis.Cmd
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				ev = p.Eval(ctx, insertAlertLua, []string{s.alertSeqKey(), ik}, s.p+"alert:", b, ck, int64(causeTTL/time.Second), dk)
				return nil
			})
			if err != nil {
				return err
			}
			n, err := ev.Int64()
			if err != nil {
				return fmt.Errorf("insert alert: %w", err)
			}
			out, created = a, true
			out.ID = uint64(n)
			return nil
		}, s.fence.WatchKeys(watch...)...)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return Alert{}, false, fmt.Errorf("raise alert: %w", err)
		}
		return out, created, nil
	}
	return Alert{}, false, fmt.Errorf("raise alert %s: %w", a.IncidentKey, ErrConflict)
}

// GetAlert implements Store.
func (s *RedisStore) GetAlert(ctx context.Context, id uint64) (Alert, error) {
	return s.readAlert(ctx, s.c, id)
}

// LastAlertID implements Store.
func (s *RedisStore) LastAlertID(ctx context.Context) (uint64, error) {
	n, err := s.c.Get(ctx, s.alertSeqKey()).Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last alert id: %w", err)
	}
	return n, nil
}

// ListAlerts implements Store. Ids are dense (1..seq), so it walks them in chunks with
// MGET rather than keeping a separate index.
func (s *RedisStore) ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error) {
	last, err := s.LastAlertID(ctx)
	if err != nil {
		return nil, err
	}
	const chunk = 256
	n := f.limit()
	var out []Alert
	var lo, hi uint64 // the next chunk, inclusive
	next := func() bool {
		if f.Ascending {
			if lo == 0 {
				lo = f.AfterID + 1
			} else {
				lo = hi + 1
			}
			hi = min(lo+chunk-1, last)
			return lo <= hi
		}
		if hi == 0 && lo == 0 {
			hi = last
			if f.BeforeID > 0 && f.BeforeID-1 < hi {
				hi = f.BeforeID - 1
			}
		} else {
			if lo <= 1 {
				return false
			}
			hi = lo - 1
		}
		if hi == 0 {
			return false
		}
		lo = max(1, hi-min(hi, chunk)+1)
		return true
	}
	for len(out) < n && next() {
		keys := make([]string, 0, hi-lo+1)
		ids := make([]uint64, 0, hi-lo+1)
		for id := lo; id <= hi; id++ {
			keys, ids = append(keys, s.alertKey(id)), append(ids, id)
		}
		if !f.Ascending {
			for i, j := 0, len(keys)-1; i < j; i, j = i+1, j-1 {
				keys[i], keys[j] = keys[j], keys[i]
				ids[i], ids[j] = ids[j], ids[i]
			}
		}
		vals, err := s.c.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, fmt.Errorf("list alerts: %w", err)
		}
		for i, v := range vals {
			str, ok := v.(string)
			if !ok {
				continue // not written (trimmed by an operator)
			}
			a, err := decodeAlert(ids[i], []byte(str))
			if err != nil {
				return nil, err
			}
			if f.Match(&a) {
				out = append(out, a)
				if len(out) == n {
					break
				}
			}
		}
	}
	return out, nil
}

// SetAlertState implements Store.
func (s *RedisStore) SetAlertState(ctx context.Context, id uint64, to AlertState, who, note string, at time.Time) (Alert, error) {
	key := s.alertKey(id)
	for range maxRetries {
		var out Alert
		err := s.c.Watch(ctx, func(tx *redis.Tx) error {
			a, err := s.readAlert(ctx, tx, id)
			if err != nil {
				return err
			}
			if err := a.transition(to, who, note, at); err != nil {
				return err
			}
			b, err := json.Marshal(a)
			if err != nil {
				return fmt.Errorf("encode alert: %w", err)
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, b, 0)
				if to == AlertResolved {
					p.ZAdd(ctx, s.resolvedKey(), redis.Z{Score: float64(at.UnixMilli()), Member: id})
				}
				return nil
			})
			out = a
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		return out, err
	}
	return Alert{}, fmt.Errorf("alert %d: %w", id, ErrConflict)
}

// SetDelivery implements Store.
func (s *RedisStore) SetDelivery(ctx context.Context, id uint64, d Delivery) (Alert, error) {
	key := s.alertKey(id)
	for range maxRetries {
		var out Alert
		err := s.c.Watch(ctx, func(tx *redis.Tx) error {
			a, err := s.readAlert(ctx, tx, id)
			if err != nil {
				return err
			}
			if !a.setDelivery(d) {
				return fmt.Errorf("alert %d has no delivery to sink %q: %w", id, d.Sink, ErrNotFound)
			}
			b, err := json.Marshal(a)
			if err != nil {
				return fmt.Errorf("encode alert: %w", err)
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, b, 0)
				if !a.pendingDelivery() {
					p.SRem(ctx, s.deliverKey(), id)
				}
				return nil
			})
			out = a
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		return out, err
	}
	return Alert{}, fmt.Errorf("alert %d: %w", id, ErrConflict)
}

// PendingDeliveries implements Store.
func (s *RedisStore) PendingDeliveries(ctx context.Context, limit int) ([]Alert, error) {
	members, err := s.c.SMembers(ctx, s.deliverKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("pending deliveries: %w", err)
	}
	ids := make([]uint64, 0, len(members))
	for _, m := range members {
		if id, err := strconv.ParseUint(m, 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []Alert
	for _, id := range ids {
		if len(out) == limit {
			break
		}
		a, err := s.readAlert(ctx, s.c, id)
		if errors.Is(err, ErrNotFound) {
			s.c.SRem(ctx, s.deliverKey(), id) // pruned meanwhile
			continue
		}
		if err != nil {
			return nil, err
		}
		if a.pendingDelivery() {
			out = append(out, a)
		}
	}
	return out, nil
}

// PruneAlerts implements Store.
func (s *RedisStore) PruneAlerts(ctx context.Context, resolvedBefore time.Time, limit int) (int, error) {
	n, err := s.c.Eval(ctx, pruneAlertsLua, []string{s.resolvedKey()},
		resolvedBefore.UnixMilli(), limit, s.p+"alert:", s.p+"incident:").Int()
	if err != nil {
		return 0, fmt.Errorf("prune alerts: %w", err)
	}
	return n, nil
}

// CountAlerts implements Store. It walks every retained alert (bounded by the retention).
func (s *RedisStore) CountAlerts(ctx context.Context, f AlertFilter) (int, error) {
	last, err := s.LastAlertID(ctx)
	if err != nil {
		return 0, err
	}
	const chunk = 512
	n := 0
	for lo := uint64(1); lo <= last; lo += chunk {
		hi := min(lo+chunk-1, last)
		keys := make([]string, 0, hi-lo+1)
		for id := lo; id <= hi; id++ {
			keys = append(keys, s.alertKey(id))
		}
		vals, err := s.c.MGet(ctx, keys...).Result()
		if err != nil {
			return 0, fmt.Errorf("count alerts: %w", err)
		}
		for i, v := range vals {
			str, ok := v.(string)
			if !ok {
				continue
			}
			a, err := decodeAlert(lo+uint64(i), []byte(str))
			if err != nil {
				return 0, err
			}
			if f.Match(&a) {
				n++
			}
		}
	}
	return n, nil
}

// ResolveIncident implements Store.
func (s *RedisStore) ResolveIncident(ctx context.Context, key, who, note string, at time.Time) (Alert, bool, error) {
	id, err := s.c.Get(ctx, s.incidentKey(key)).Uint64()
	if errors.Is(err, redis.Nil) {
		return Alert{}, false, nil
	}
	if err != nil {
		return Alert{}, false, fmt.Errorf("get incident: %w", err)
	}
	a, err := s.SetAlertState(ctx, id, AlertResolved, who, note, at)
	if errors.Is(err, ErrBadTransition) || errors.Is(err, ErrNotFound) {
		return Alert{}, false, nil
	}
	if err != nil {
		return Alert{}, false, err
	}
	return a, true, nil
}

// GetVehicle implements Store.
func (s *RedisStore) GetVehicle(ctx context.Context, vehicle string) (VehicleState, bool, error) {
	b, err := s.c.Get(ctx, s.vehicleKey(vehicle)).Bytes()
	if errors.Is(err, redis.Nil) {
		return VehicleState{}, false, nil
	}
	if err != nil {
		return VehicleState{}, false, fmt.Errorf("get vehicle %s: %w", vehicle, err)
	}
	var v VehicleState
	if err := json.Unmarshal(b, &v); err != nil {
		return VehicleState{}, false, fmt.Errorf("decode vehicle %s: %w", vehicle, err)
	}
	return v, true, nil
}

// PutVehicle implements Store.
func (s *RedisStore) PutVehicle(ctx context.Context, v VehicleState) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode vehicle %s: %w", v.Vehicle, err)
	}
	if err := s.c.Set(ctx, s.vehicleKey(v.Vehicle), b, 0).Err(); err != nil {
		return fmt.Errorf("put vehicle %s: %w", v.Vehicle, err)
	}
	return nil
}

// GetVehicles implements Store.
func (s *RedisStore) GetVehicles(ctx context.Context, vehicles []string) (map[string]VehicleState, error) {
	out := make(map[string]VehicleState, len(vehicles))
	if len(vehicles) == 0 {
		return out, nil
	}
	keys := make([]string, len(vehicles))
	for i, v := range vehicles {
		keys[i] = s.vehicleKey(v)
	}
	var mget *redis.SliceCmd
	if err := s.fence.Read(ctx, s.c, func(p redis.Pipeliner) error {
		mget = p.MGet(ctx, keys...)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("get vehicles: %w", err)
	}
	vals, err := mget.Result()
	if err != nil {
		return nil, fmt.Errorf("get vehicles: %w", err)
	}
	for i, val := range vals {
		str, ok := val.(string)
		if !ok {
			continue
		}
		var v VehicleState
		if err := json.Unmarshal([]byte(str), &v); err != nil {
			return nil, fmt.Errorf("decode vehicle %s: %w", vehicles[i], err)
		}
		out[vehicles[i]] = v
	}
	return out, nil
}

// PutVehicles implements Store.
func (s *RedisStore) PutVehicles(ctx context.Context, vs []VehicleState) error {
	if len(vs) == 0 {
		return nil
	}
	err := s.fence.Write(ctx, s.c, func(p redis.Pipeliner) error {
		for i := range vs {
			b, err := json.Marshal(vs[i])
			if err != nil {
				return fmt.Errorf("encode vehicle %s: %w", vs[i].Vehicle, err)
			}
			p.Set(ctx, s.vehicleKey(vs[i].Vehicle), b, 0)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put vehicles: %w", err)
	}
	return nil
}

// WithOpenCommands implements Store. An empty Redis set does not exist, so one pipelined
// EXISTS per vehicle answers it.
func (s *RedisStore) WithOpenCommands(ctx context.Context, vehicles []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(vehicles) == 0 {
		return out, nil
	}
	cmds := make([]*redis.IntCmd, len(vehicles))
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, v := range vehicles {
			cmds[i] = p.Exists(ctx, s.cmdsOpenKey(v))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open commands: %w", err)
	}
	for i, c := range cmds {
		if c.Val() > 0 {
			out[vehicles[i]] = true
		}
	}
	return out, nil
}

func (s *RedisStore) writeCommand(ctx context.Context, p redis.Pipeliner, c *Command, b []byte) {
	p.Set(ctx, s.cmdKey(c.ID), b, 0)
	if c.State.Open() {
		p.SAdd(ctx, s.cmdsOpenKey(c.Vehicle), c.ID)
		p.SAdd(ctx, s.cmdsOpenAllKey(), c.ID)
	} else {
		p.SRem(ctx, s.cmdsOpenKey(c.Vehicle), c.ID)
		p.SRem(ctx, s.cmdsOpenAllKey(), c.ID)
	}
}

// CreateCommand implements Store.
func (s *RedisStore) CreateCommand(ctx context.Context, c Command) (Command, error) {
	n, err := s.c.Incr(ctx, s.cmdSeqKey()).Result()
	if err != nil {
		return Command{}, fmt.Errorf("command id: %w", err)
	}
	c.ID = "c" + strconv.FormatInt(n, 10)
	c.Version = 1
	b, err := json.Marshal(c)
	if err != nil {
		return Command{}, fmt.Errorf("encode command: %w", err)
	}
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		s.writeCommand(ctx, p, &c, b)
		p.ZAdd(ctx, s.cmdsKey(), redis.Z{Score: float64(n), Member: c.ID})
		p.ZAdd(ctx, s.cmdsVehKey(c.Vehicle), redis.Z{Score: float64(n), Member: c.ID})
		return nil
	})
	if err != nil {
		return Command{}, fmt.Errorf("create command: %w", err)
	}
	return c, nil
}

func (s *RedisStore) readCommand(ctx context.Context, g redis.Cmdable, id string) (Command, error) {
	b, err := g.Get(ctx, s.cmdKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Command{}, fmt.Errorf("command %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Command{}, fmt.Errorf("get command %s: %w", id, err)
	}
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return Command{}, fmt.Errorf("decode command %s: %w", id, err)
	}
	return c, nil
}

// GetCommand implements Store.
func (s *RedisStore) GetCommand(ctx context.Context, id string) (Command, error) {
	return s.readCommand(ctx, s.c, id)
}

// UpdateCommand implements Store.
func (s *RedisStore) UpdateCommand(ctx context.Context, c Command) (Command, error) {
	key := s.cmdKey(c.ID)
	err := s.c.Watch(ctx, func(tx *redis.Tx) error {
		cur, err := s.readCommand(ctx, tx, c.ID)
		if err != nil {
			return err
		}
		if cur.Version != c.Version {
			return fmt.Errorf("command %s version %d, stored %d: %w", c.ID, c.Version, cur.Version, ErrConflict)
		}
		c.Version++
		b, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("encode command: %w", err)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			s.writeCommand(ctx, p, &c, b)
			return nil
		})
		return err
	}, key)
	if errors.Is(err, redis.TxFailedErr) {
		return Command{}, fmt.Errorf("command %s: %w", c.ID, ErrConflict)
	}
	if err != nil {
		return Command{}, err
	}
	return c, nil
}

// ListCommands implements Store.
func (s *RedisStore) ListCommands(ctx context.Context, f CommandFilter) ([]Command, error) {
	var ids []string
	var err error
	switch {
	case f.OpenOnly && f.Vehicle != "":
		ids, err = s.c.SMembers(ctx, s.cmdsOpenKey(f.Vehicle)).Result()
	case f.OpenOnly:
		ids, err = s.c.SMembers(ctx, s.cmdsOpenAllKey()).Result()
	case f.Vehicle != "":
		ids, err = s.c.ZRevRange(ctx, s.cmdsVehKey(f.Vehicle), 0, -1).Result()
	default:
		ids, err = s.c.ZRevRange(ctx, s.cmdsKey(), 0, -1).Result()
	}
	if err != nil {
		return nil, fmt.Errorf("list commands: %w", err)
	}
	var out []Command
	const chunk = 256
	for start := 0; start < len(ids) && (f.OpenOnly || len(out) < f.limit()); start += chunk {
		// Open sets are unordered (and small): read them whole, then sort.
		part := ids[start:min(start+chunk, len(ids))]
		keys := make([]string, len(part))
		for i, id := range part {
			keys[i] = s.cmdKey(id)
		}
		vals, err := s.c.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, fmt.Errorf("list commands: %w", err)
		}
		for _, v := range vals {
			str, ok := v.(string)
			if !ok {
				continue
			}
			var c Command
			if err := json.Unmarshal([]byte(str), &c); err != nil {
				return nil, fmt.Errorf("decode command: %w", err)
			}
			if f.Match(&c) {
				out = append(out, c)
			}
		}
	}
	sortCommandsNewestFirst(out)
	return out[:min(len(out), f.limit())], nil
}
