package launch

import (
	"fmt"
	"os"

	"github.com/fleetwire/fleetwire/services/dispatch"
)

// buildDispatch makes the dispatch service: theft detection, the alert feed and commands
// to vehicles.
func buildDispatch(d deps) (service, error) {
	cfg := dispatch.DefaultConfig()
	cfg.Partitions, cfg.Rebuild = d.parts, d.memory()
	cfg.FuelMinConfidence = d.opts.FuelMinConfidence
	if path := d.opts.Schedules; path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("schedules: %w", err)
		}
		// Schedules, groups, per-group theft thresholds and fuel-theft confidence
		// thresholds (docs/dispatch.md).
		if cfg, err = dispatch.ParseConfig(data, cfg); err != nil {
			return nil, fmt.Errorf("schedules %s: %w", path, err)
		}
	}
	var st dispatch.Store = dispatch.NewMemoryStore()
	if !d.memory() {
		st = dispatch.NewRedisStore(d.redis, d.prefix)
	}
	return dispatch.New(cfg, d.bus, st, d.log.With("service", Dispatch), d.registerer(Dispatch))
}
