package tracking

import (
	"math/rand/v2"
	"testing"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

// BenchmarkIndexNearest10 is BenchmarkNearest10/metro without the store around the
// R-tree (no lock, no result copies).
func BenchmarkIndexNearest10(b *testing.B) {
	region := geo.Rect{MinLat: 47.5, MaxLat: 49.3, MinLon: 10.2, MaxLon: 12.9}
	rng := rand.New(rand.NewPCG(1, 2))
	st := nearestFleet(100_000, rng, region)
	qs := make([]geo.Point, 4096)
	for i := range qs {
		qs[i] = geo.Point{Lat: region.MinLat + rng.Float64()*(region.MaxLat-region.MinLat), Lon: region.MinLon + rng.Float64()*(region.MaxLon-region.MinLon)}
	}
	b.ResetTimer()
	c := startCPU(b)
	defer c.report(b)
	for i := 0; i < b.N; i++ {
		n := 0
		st.idx.Nearby(qs[i%len(qs)], 0, func(e *indexed, d float64) bool { n++; return n < 10 })
	}
}
