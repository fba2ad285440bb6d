package launch

import (
	"fmt"
	"os"

	"github.com/fleetwire/fleetwire/services/tracking"
)

// buildTracking makes the tracking service: positions, live updates, history and trips.
func buildTracking(d deps) (service, error) {
	cfg := tracking.DefaultConfig()
	cfg.Partitions, cfg.Rebuild = d.parts, d.rebuilds(Tracking)
	if d.opts.OfflineAfter > 0 {
		cfg.OfflineAfter = d.opts.OfflineAfter
		// Swept often enough that a vehicle is reported within a quarter of the threshold.
		cfg.SweepInterval = min(cfg.SweepInterval, d.opts.OfflineAfter/4)
	}
	if path := d.opts.TrackingRules; path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("tracking rules: %w", err)
		}
		// Filter profiles per device model, trip thresholds per group (docs/tracking.md).
		if cfg, err = tracking.ParseRules(data, cfg); err != nil {
			return nil, fmt.Errorf("tracking rules %s: %w", path, err)
		}
	}
	var st tracking.Store = tracking.NewMemoryStore()
	if !d.memory() {
		st = tracking.NewRedisStore(d.redis, d.prefix).WithFence(d.fence(Tracking))
	}
	s, err := tracking.New(cfg, d.bus, st, d.log.With("service", Tracking), d.registerer(Tracking))
	if err != nil {
		return nil, err
	}
	s.PublishGroupsTo(d.groups)
	return s, nil
}
