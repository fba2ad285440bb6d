package launch

import "github.com/fleetwire/fleetwire/services/maintenance"

// buildMaintenance makes the maintenance service: service plans, fault codes, fuel.
func buildMaintenance(d deps) (service, error) {
	cfg := maintenance.DefaultConfig()
	cfg.Partitions, cfg.Rebuild = d.parts, d.rebuilds(Maintenance)
	var st maintenance.Store = maintenance.NewMemoryStore()
	if !d.memory() {
		st = maintenance.NewRedisStore(d.redis, d.prefix).WithFence(d.fence(Maintenance))
	}
	svc, err := maintenance.New(cfg, d.bus, st, d.log.With("service", Maintenance), d.registerer(Maintenance))
	if err != nil {
		return nil, err
	}
	// One group model: plans, due lists and fuel reports by group resolve the registry's
	// groups (FLEET_VEHICLE_GROUPS), the ones tracking, geofence and dispatch use.
	if d.groups != nil {
		svc.UseGroups(d.groups)
	}
	return svc, nil
}
