package tracking

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// BenchmarkApply measures applying one record to the in-memory live state of a vehicle
// (all filter rules, odometer, status), single goroutine, 1 000 vehicles round robin.
func BenchmarkApply(b *testing.B) {
	const vehicles = 1000
	tr := NewTracker(DefaultConfig())
	states := make([]*State, vehicles)
	recs := make([]telemetry.Record, vehicles)
	base := time.Now().Add(-24 * time.Hour)
	for i := range states {
		states[i] = NewState(fmt.Sprintf("v%04d", i))
		recs[i] = telemetry.Record{VehicleID: states[i].VehicleID, Lat: 48 + float64(i)*1e-3, Lon: 11, SpeedKmh: 40, FixValid: true}
		recs[i].Set(telemetry.HasIgnition)
		recs[i].Ignition = true
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	c := startCPU(b)
	defer c.report(b)
	for i := 0; i < b.N; i++ {
		v := i % vehicles
		r := &recs[v]
		step := i / vehicles
		r.DeviceTime = base.Add(time.Duration(step) * time.Second)
		r.Sequence = uint64(step)
		r.Lon = 11 + float64(step)*1e-4 // ~7 m per second: 27 km/h
		tr.Apply(states[v], r, now)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func nearestFleet(n int, rng *rand.Rand, region geo.Rect) *MemoryStore {
	st := NewMemoryStore()
	states := make([]*State, 0, 1000)
	for i := range n {
		lat := region.MinLat + rng.Float64()*(region.MaxLat-region.MinLat)
		lon := region.MinLon + rng.Float64()*(region.MaxLon-region.MinLon)
		states = append(states, stateAt(fmt.Sprintf("v%06d", i), lat, lon, StatusMoving))
		if len(states) == cap(states) || i == n-1 {
			_ = st.Write(context.Background(), Batch{States: states, Now: time.Now()})
			states = states[:0]
		}
	}
	return st
}

// BenchmarkNearest10 measures nearest-10 among 100 000 vehicles in the in-memory R-tree,
// for a fleet spread over a 200 km × 200 km metropolitan area and over the whole world.
// It reports the median latency of a query (p50-ns) besides the mean.
func BenchmarkNearest10(b *testing.B) {
	for _, tc := range []struct {
		name   string
		region geo.Rect
	}{
		{"metro", geo.Rect{MinLat: 47.5, MaxLat: 49.3, MinLon: 10.2, MaxLon: 12.9}},
		{"world", geo.Rect{MinLat: -85, MaxLat: 85, MinLon: -180, MaxLon: 180}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			st := nearestFleet(100_000, rng, tc.region)
			queries := make([]geo.Point, 4096)
			for i := range queries {
				queries[i] = geo.Point{
					Lat: tc.region.MinLat + rng.Float64()*(tc.region.MaxLat-tc.region.MinLat),
					Lon: tc.region.MinLon + rng.Float64()*(tc.region.MaxLon-tc.region.MinLon),
				}
			}
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			c := startCPU(b)
			for i := 0; i < b.N; i++ {
				start := time.Now()
				res, err := st.Nearest(ctx, NearestQuery{Point: queries[i%len(queries)], K: 10})
				lat = append(lat, time.Since(start))
				if err != nil || len(res) != 10 {
					b.Fatalf("got %d results, %v", len(res), err)
				}
			}
			b.StopTimer()
			c.report(b)
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		})
	}
}

// BenchmarkRedisWrite measures the Redis path: batches of 100 vehicles' new states plus
// their history fixes in one pipeline, as the bus adapter writes them.
func BenchmarkRedisWrite(b *testing.B) {
	c := redistest.Client(b)
	st := NewRedisStore(c, redistest.Prefix(b, c))
	const batch = 100
	tr := NewTracker(DefaultConfig())
	states := make([]*State, 1000)
	for i := range states {
		states[i] = NewState(fmt.Sprintf("v%04d", i))
	}
	base := time.Now().Add(-time.Hour)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := Batch{Now: time.Now(), Retention: 30 * 24 * time.Hour}
		for j := range batch {
			k := (i*batch + j) % len(states)
			step := (i*batch + j) / len(states)
			r := telemetry.Record{VehicleID: states[k].VehicleID, DeviceTime: base.Add(time.Duration(step) * time.Second),
				Sequence: uint64(step), Lat: 48 + float64(k)*1e-3, Lon: 11 + float64(step)*1e-4, SpeedKmh: 40, FixValid: true}
			res := tr.Apply(states[k], &r, w.Now)
			w.States = append(w.States, states[k])
			if res.HasPoint {
				w.Points = append(w.Points, TrackPoint{VehicleID: r.VehicleID, Fix: res.Point})
			}
		}
		if err := st.Write(ctx, w); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkRedisMemoryPerVehicleDay writes one day of 1 Hz fixes for one vehicle and
// reports the Redis memory it takes (history sorted set plus state blob and indexes).
func BenchmarkRedisMemoryPerVehicleDay(b *testing.B) {
	c := redistest.Client(b)
	prefix := redistest.Prefix(b, c)
	st := NewRedisStore(c, prefix)
	ctx := context.Background()
	tr := NewTracker(DefaultConfig())
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("mem%d", i)
		s := NewState(id)
		day := time.Now().UTC().Truncate(24 * time.Hour).Add(-24 * time.Hour)
		var w Batch
		for sec := range 86400 {
			r := telemetry.Record{VehicleID: id, DeviceTime: day.Add(time.Duration(sec) * time.Second), Sequence: uint64(sec),
				Lat: 48 + float64(sec)*1e-5, Lon: 11, SpeedKmh: 40, HeadingDeg: 10, AltitudeM: 500, FixValid: true}
			r.Set(telemetry.HasIgnition)
			r.Ignition = true
			res := tr.Apply(s, &r, time.Now())
			if res.HasPoint {
				w.Points = append(w.Points, TrackPoint{VehicleID: id, Fix: res.Point})
			}
			if len(w.Points) == 500 || sec == 86399 {
				w.States, w.Now, w.Retention = []*State{s}, time.Now(), 30*24*time.Hour
				if err := st.Write(ctx, w); err != nil {
					b.Fatal(err)
				}
				w.Points = w.Points[:0]
			}
		}
		var total int64
		for _, k := range []string{st.histKey(id, day), st.stateKey(id)} {
			n, err := c.MemoryUsage(ctx, k).Result()
			if err != nil {
				b.Fatal(err)
			}
			total += n
		}
		card, _ := c.ZCard(ctx, st.histKey(id, day)).Result()
		if card != 86400 {
			b.Fatalf("got %d fixes stored, want 86400", card)
		}
		b.ReportMetric(float64(total), "bytes/vehicle-day")
		b.ReportMetric(float64(total)/86400, "bytes/fix")
	}
}
