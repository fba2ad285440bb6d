package fence

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

// The engine benchmarks use the workload shape of the Tile38 reference in LIMITS.md:
// 10 000 vehicles moving in 100 m steps among polygon zones of 32 vertices (and a
// variant of 1 024 vertices), enter/exit detection on every step.
//
// Zones of 32 vertices are random concave star polygons, those of 1 024 vertices
// detailed smooth outlines (see blob), of 200–1 500 m radius scattered over a
// 1° × 1° area (about 111 × 68 km around Berlin); the vehicles drive there in straight
// lines with a random heading, back and forth, so every step is a real move.

const (
	benchVehicles = 10_000
	benchSteps    = 32 // per leg; vehicles drive 32 steps out and 32 back
)

var benchArea = geo.Rect{MinLat: 52.0, MinLon: 13.0, MaxLat: 53.0, MaxLon: 14.0}

func benchZones(tb testing.TB, n, vertices int, seed uint64) []*Zone {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	zones := make([]*Zone, n)
	for i := range zones {
		lat := benchArea.MinLat + rng.Float64()*(benchArea.MaxLat-benchArea.MinLat)
		lon := benchArea.MinLon + rng.Float64()*(benchArea.MaxLon-benchArea.MinLon)
		r := (200 + rng.Float64()*1300) / metresPerDeg
		var ring [][2]float64
		if vertices <= 64 {
			ring = star(rng, lat, lon, 0.5*r, r, vertices-1) // closed ring: vertices positions
		} else {
			ring = blob(rng, lat, lon, r, vertices-1)
		}
		z, err := Compile(Spec{ID: fmt.Sprintf("z%05d", i), Name: "bench", Alert: AlertBoth,
			GeoJSON: `{"type":"Polygon","coordinates":[` + ringJSON(ring) + `]}`})
		if err != nil {
			tb.Fatal(err)
		}
		zones[i] = z
	}
	return zones
}

// blob is a detailed outline (like a traced site or district boundary): n vertices
// whose radius varies smoothly between 0.5 r and r, with a little noise per vertex.
func blob(rng *rand.Rand, lat, lon, r float64, n int) [][2]float64 {
	k1, k2 := 2+rng.IntN(4), 5+rng.IntN(6)
	p1, p2 := rng.Float64()*2*math.Pi, rng.Float64()*2*math.Pi
	ring := make([][2]float64, 0, n+1)
	for i := 0; i < n; i++ {
		a := 2 * math.Pi * float64(i) / float64(n)
		f := 0.75 + 0.15*math.Sin(float64(k1)*a+p1) + 0.08*math.Sin(float64(k2)*a+p2) + 0.02*(rng.Float64()-0.5)
		ring = append(ring, [2]float64{lon + f*r*math.Cos(a)/math.Cos(lat*math.Pi/180), lat + f*r*math.Sin(a)})
	}
	return append(ring, ring[0])
}

// benchPaths returns, per vehicle, 2·benchSteps positions: out and back.
func benchPaths(seed uint64) [][]geo.Point {
	rng := rand.New(rand.NewPCG(seed, 2))
	paths := make([][]geo.Point, benchVehicles)
	for v := range paths {
		p := geo.Point{
			Lat: benchArea.MinLat + 0.05 + rng.Float64()*0.9,
			Lon: benchArea.MinLon + 0.05 + rng.Float64()*0.9,
		}
		heading := rng.Float64() * 360
		path := make([]geo.Point, 0, 2*benchSteps)
		for s := 0; s < benchSteps; s++ {
			path = append(path, p)
			p = geo.Destination(p, heading, 100)
		}
		for s := benchSteps - 1; s >= 0; s-- {
			path = append(path, path[s])
		}
		paths[v] = path
	}
	return paths
}

type benchWorld struct {
	next   int // fixes used so far: time only moves forward across benchmark runs
	ix     *Index
	paths  [][]geo.Point
	states []State
}

func newBenchWorld(b *testing.B, zones, vertices int) *benchWorld {
	w := &benchWorld{ix: NewIndex(benchZones(b, zones, vertices, 42)), paths: benchPaths(43), states: make([]State, benchVehicles)}
	for v := range w.states {
		w.states[v].Vehicle = fmt.Sprintf("veh%05d", v)
	}
	return w
}

func (w *benchWorld) fix(i int) (int, Fix) {
	v := i % benchVehicles
	round := i / benchVehicles
	path := w.paths[v]
	p := path[round%len(path)]
	return v, Fix{Time: t0.Add(time.Duration(round) * 10 * time.Second), Lat: p.Lat, Lon: p.Lon, SpeedKmh: 36}
}

func BenchmarkEngine(b *testing.B) {
	for _, tc := range []struct{ zones, vertices int }{{1000, 32}, {10_000, 32}, {1000, 1024}} {
		name := fmt.Sprintf("zones=%d/vertices=%d", tc.zones, tc.vertices)
		w := newBenchWorld(b, tc.zones, tc.vertices)
		r := DefaultRules()
		b.Run(name+"/serial", func(b *testing.B) {
			var out []Event
			events := 0
			// Warm up one round so every vehicle has a previous fix.
			for i := 0; i < benchVehicles; i++ {
				v, f := w.fix(w.next)
				w.next++
				out, _ = r.Step(w.ix, &w.states[v], f, out[:0])
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				v, f := w.fix(w.next)
				w.next++
				var err error
				out, err = r.Step(w.ix, &w.states[v], f, out[:0])
				if err != nil {
					b.Fatal(err)
				}
				events += len(out)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "evals/s")
			b.ReportMetric(float64(b.N)/(cpuTime()-cpu0).Seconds(), "evals/cpu-s")
			b.ReportMetric(float64(events)/float64(b.N), "events/eval")
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			// Each goroutine owns the vehicles v ≡ g (mod G), as partitions do in the service.
			g := runtime.GOMAXPROCS(0)
			states := make([]State, benchVehicles)
			for v := range states {
				states[v].Vehicle = w.states[v].Vehicle
			}
			var next atomic.Int64
			var total atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				id := int(next.Add(1)-1) % g
				var out []Event
				i := 0
				for pb.Next() {
					// The k-th vehicle of this goroutine, round after round.
					k := i % (benchVehicles / g)
					round := i / (benchVehicles / g)
					v := k*g + id
					_, f := w.fix(round*benchVehicles + v)
					out, _ = r.Step(w.ix, &states[v], f, out[:0])
					i++
				}
				total.Add(int64(i))
			})
			b.ReportMetric(float64(total.Load())/b.Elapsed().Seconds(), "evals/s")
			b.ReportMetric(float64(total.Load())/(cpuTime()-cpu0).Seconds(), "evals/cpu-s")
		})
	}
}

// cpuTime is the CPU time the process has used. On a shared machine wall-clock rates
// swing with other load; evaluations per CPU-second say what the engine costs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestBenchWorkloadIsRealistic guards the benchmark's meaning: vehicles do meet zones.
func TestBenchWorkloadIsRealistic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 1 000 zones")
	}
	ix := NewIndex(benchZones(t, 1000, 32, 42))
	paths := benchPaths(43)
	r := DefaultRules()
	inside, events := 0, 0
	for v := 0; v < 300; v++ {
		st := State{Vehicle: "v"}
		for s, p := range paths[v] {
			out, err := r.Step(ix, &st, Fix{Time: t0.Add(time.Duration(s) * time.Second), Lat: p.Lat, Lon: p.Lon}, nil)
			if err != nil {
				t.Fatal(err)
			}
			events += len(out)
			if len(st.Zones) > 0 {
				inside++
			}
		}
	}
	steps := 300 * 2 * benchSteps
	t.Logf("%d steps: %.1f%% inside some zone, %.3f events per step", steps, 100*float64(inside)/float64(steps), float64(events)/float64(steps))
	if inside == 0 || events == 0 {
		t.Fatalf("got %d inside and %d events, want some of both", inside, events)
	}
}
