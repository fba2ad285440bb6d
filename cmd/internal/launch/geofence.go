package launch

import "github.com/fleetwire/fleetwire/services/geofence"

// buildGeofence makes the geofence service: zones, membership and zone events.
func buildGeofence(d deps) (service, error) {
	cfg := geofence.DefaultConfig()
	cfg.Partitions, cfg.Rebuild = d.parts, d.rebuilds(Geofence)
	cfg.Replicas = d.opts.Streams.Replicas
	var st geofence.Store = geofence.NewMemoryStore()
	if !d.memory() {
		st = geofence.NewRedisStore(d.redis, d.prefix).WithFence(d.fence(Geofence))
	}
	svc, err := geofence.New(cfg, d.bus, st, d.log.With("service", Geofence), d.registerer(Geofence))
	if err != nil {
		return nil, err
	}
	// Zones for a group follow the registry's groups (FLEET_VEHICLE_GROUPS).
	if d.groups != nil {
		svc.UseGroups(d.groups)
	}
	return svc, nil
}
