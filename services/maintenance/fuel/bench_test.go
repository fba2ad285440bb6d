package fuel

import (
	"testing"
)

// BenchmarkDetector measures readings per second through one vehicle's detector on the
// synthetic data set (noise, slosh, refuels, drains).
func BenchmarkDetector(b *testing.B) {
	tr := simulateVehicle(42, 10)
	cfg := DefaultConfig()
	n := 0
	b.ResetTimer()
	for b.Loop() {
		var st State
		d := NewDetector(cfg, Profile{CapacityL: tr.capL}, &st)
		for _, r := range tr.readings {
			_, _ = d.Add(r)
		}
		n += len(tr.readings)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
}
