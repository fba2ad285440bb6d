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
	cfg.Partitions, cfg.Rebuild = d.parts, d.rebuilds(Dispatch)
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
	if d.opts.AlertRetention < 0 {
		return nil, fmt.Errorf("%w: alert retention %s is negative", ErrConfig, d.opts.AlertRetention)
	}
	cfg.AlertRetention = d.opts.AlertRetention
	if path := d.opts.AlertRules; path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("alert rules: %w", err)
		}
		// Webhook secrets come from their own files or the environment, never the rules file.
		if cfg.Rules, err = dispatch.ParseAlertRules(data, dispatch.SecretSource{ReadFile: os.ReadFile, Getenv: os.LookupEnv}); err != nil {
			return nil, fmt.Errorf("alert rules %s: %w", path, err)
		}
	}
	var st dispatch.Store = dispatch.NewMemoryStore()
	if !d.memory() {
		st = dispatch.NewRedisStore(d.redis, d.prefix).WithFence(d.fence(Dispatch))
	}
	svc, err := dispatch.New(cfg, d.bus, st, d.log.With("service", Dispatch), d.registerer(Dispatch))
	if err != nil {
		return nil, err
	}
	// Registered vehicles may be commanded before they first report.
	svc.UseRegistry(d.groups)
	return svc, nil
}
