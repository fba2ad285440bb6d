package launch

import (
	"log/slog"

	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

// newSim builds the in-process simulated fleet of o.Sim vehicles; the caller runs it on
// the process's bus.
func newSim(o Options, log *slog.Logger) (*fleetsim.Fleet, error) {
	cfg := fleetsim.DefaultConfig()
	cfg.Vehicles = o.Sim
	if o.SimSeed != 0 {
		cfg.Seed = o.SimSeed
	}
	return fleetsim.New(cfg, log)
}
