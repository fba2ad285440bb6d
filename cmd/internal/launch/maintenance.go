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
	return maintenance.New(cfg, d.bus, st, d.log.With("service", Maintenance), d.registerer(Maintenance))
}
