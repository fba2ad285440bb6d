package launch

import "github.com/fleetwire/fleetwire/services/tracking"

// buildTracking makes the tracking service: positions, live updates, history and trips.
func buildTracking(d deps) (service, error) {
	cfg := tracking.DefaultConfig()
	cfg.Partitions, cfg.Rebuild = d.parts, d.memory()
	var st tracking.Store = tracking.NewMemoryStore()
	if !d.memory() {
		st = tracking.NewRedisStore(d.redis, d.prefix)
	}
	return tracking.New(cfg, d.bus, st, d.log.With("service", Tracking), d.registerer(Tracking))
}
