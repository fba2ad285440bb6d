package fleetsim_test

import (
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/fleetwire/fleetwire/pkg/wire"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

// A seeded fleet replayed on a simulated clock: the same seed and start always give the
// same records, byte for byte.
func ExampleSim_Play() {
	play := func() (vehicles map[string]int, digest [32]byte) {
		cfg := fleetsim.DefaultConfig()
		cfg.Vehicles = 5
		cfg.Seed = 1
		cfg.Start = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
		sim, err := fleetsim.NewSim(cfg)
		if err != nil {
			panic(err)
		}
		vehicles = map[string]int{}
		h := sha256.New()
		sim.Play(cfg.Start.Add(2*time.Hour), func(p fleetsim.Packet, payload []byte) {
			recs, _, err := wire.DecodeBatch(p.Vehicle, payload, false)
			if err != nil {
				panic(err)
			}
			vehicles[p.Vehicle] += len(recs)
			h.Write(payload)
		})
		copy(digest[:], h.Sum(nil))
		return vehicles, digest
	}
	a, da := play()
	_, db := play()
	fmt.Println(len(a), "vehicles reported; identical replay:", da == db)
	// Output: 5 vehicles reported; identical replay: true
}

// The scripted incidents are known before they happen; Start and End are device times.
func ExampleSim_GroundTruth() {
	cfg := fleetsim.DefaultConfig()
	cfg.Vehicles = 14
	cfg.Scenarios = true
	cfg.Start = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	sim, _ := fleetsim.NewSim(cfg)
	for _, inc := range sim.GroundTruth().Incidents {
		fmt.Println(inc.Kind, inc.Vehicle, inc.Start.Sub(cfg.Start))
	}
	// Output:
	// fuel_drain veh-00001 5m0s
	// towing veh-00003 20m0s
	// night_movement veh-00005 17h0m0s
	// leave_zone veh-00007 50m0s
	// gnss_jamming veh-00009 1h5m0s
	// power_cut veh-00011 1h20m0s
	// coverage_gap veh-00013 1h35m0s
}
