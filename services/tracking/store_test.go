package tracking

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/storeguard"
)

func TestMemoryStore(t *testing.T) {
	runStoreConformance(t, func(t *testing.T) Store { return NewMemoryStore() })
}

func TestRedisStore(t *testing.T) {
	runStoreConformance(t, func(t *testing.T) Store {
		c := redistest.Client(t)
		p := redistest.Prefix(t, c)
		st := NewRedisStore(c, p)
		t.Cleanup(func() { redistest.KeysUnder(t, c, p, st.KeyPrefix()) })
		return st
	})
}

func stateAt(id string, lat, lon float64, status Status) *State {
	st := NewState(id)
	st.Status = status
	st.HasFix = true
	st.Fix = Fix{Time: time.Now().UTC().Truncate(time.Millisecond), Seq: 1, Lat: lat, Lon: lon, SpeedKmh: 12}
	st.LastSeen = st.Fix.Time
	st.LastDeviceTime = st.Fix.Time
	st.Recent = []recent{{T: st.Fix.Time.UnixNano(), Seq: 1, HasPos: true, Lat: lat, Lon: lon}}
	return st
}

func runStoreConformance(t *testing.T, newStore func(t *testing.T) Store) {
	ctx := context.Background()
	now := time.Now().UTC()

	t.Run("state round trip", func(t *testing.T) {
		s := newStore(t)
		st := stateAt("a1", 52.5, 13.4, StatusMoving)
		st.OdometerM, st.Records, st.Ignition = 1234.5, 7, true
		st.MarkApplied(99, now)
		st.MarkApplied(98, now.Add(-time.Second))
		st.Fields = 1
		if err := s.Write(ctx, Batch{States: []*State{st}, Now: now, Retention: time.Hour}); err != nil {
			t.Fatal(err)
		}
		got, err := s.States(ctx, []string{"a1", "nope"})
		if err != nil {
			t.Fatal(err)
		}
		if got[1] != nil {
			t.Errorf("got a state for an unknown vehicle: %+v", got[1])
		}
		g := got[0]
		if g == nil || g.OdometerM != 1234.5 || g.Records != 7 || !slices.Equal(g.Applied, st.Applied) || !g.Ignition || g.Status != StatusMoving ||
			!g.Fix.Time.Equal(st.Fix.Time) || g.Fix.Lat != 52.5 || len(g.Recent) != 1 || g.Recent[0] != st.Recent[0] {
			t.Errorf("got state %+v, want %+v", g, st)
		}
	})

	t.Run("unregistered vehicles are listed", func(t *testing.T) {
		s := newStore(t)
		if err := s.Write(ctx, Batch{States: []*State{stateAt("b2", 1, 1, StatusMoving), stateAt("b1", 1, 2, StatusStopped)}, Now: now}); err != nil {
			t.Fatal(err)
		}
		if err := s.Register(ctx, Info{ID: "b0", Name: "Van 0", Plate: "B-0", Groups: []string{"north"}, Metadata: map[string]string{"k": "v"}}); err != nil {
			t.Fatal(err)
		}
		ids, err := s.IDs(ctx, "", 10)
		if err != nil || !slices.Equal(ids, []string{"b0", "b1", "b2"}) {
			t.Fatalf("got ids %v, %v; want [b0 b1 b2]", ids, err)
		}
		if ids, _ := s.IDs(ctx, "b0", 1); !slices.Equal(ids, []string{"b1"}) {
			t.Errorf("got page after b0 %v, want [b1]", ids)
		}
		if n, err := s.Count(ctx); err != nil || n != 3 {
			t.Errorf("got count %d, %v; want 3", n, err)
		}
		vs, err := s.Vehicles(ctx, []string{"b0", "b1", "zz"})
		if err != nil || len(vs) != 2 {
			t.Fatalf("got %d vehicles, %v; want 2", len(vs), err)
		}
		if !vs[0].Info.Registered || vs[0].Info.Name != "Van 0" || vs[0].State != nil || vs[0].Status() != StatusNeverSeen || vs[0].Info.Metadata["k"] != "v" || !vs[0].Info.InGroup("north") {
			t.Errorf("got registered vehicle %+v", vs[0])
		}
		if vs[1].Info.Registered || vs[1].State == nil || vs[1].Status() != StatusStopped {
			t.Errorf("got unregistered vehicle %+v, want unregistered with state", vs[1])
		}
	})

	t.Run("register and update", func(t *testing.T) {
		s := newStore(t)
		if err := s.Update(ctx, Info{ID: "c1"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("update of unknown: got %v, want ErrNotFound", err)
		}
		if err := s.Register(ctx, Info{ID: "c1", Name: "one"}); err != nil {
			t.Fatal(err)
		}
		if err := s.Register(ctx, Info{ID: "c1", Name: "again"}); !errors.Is(err, ErrAlreadyExists) {
			t.Errorf("second register: got %v, want ErrAlreadyExists", err)
		}
		if err := s.Update(ctx, Info{ID: "c1", Name: "renamed", Groups: []string{"g"}}); err != nil {
			t.Fatal(err)
		}
		vs, _ := s.Vehicles(ctx, []string{"c1"})
		if len(vs) != 1 || vs[0].Info.Name != "renamed" || !vs[0].Info.InGroup("g") {
			t.Errorf("got %+v after update", vs)
		}
		// A vehicle seen before registration keeps its state.
		if err := s.Write(ctx, Batch{States: []*State{stateAt("c2", 3, 3, StatusMoving)}, Now: now}); err != nil {
			t.Fatal(err)
		}
		if err := s.Register(ctx, Info{ID: "c2", Name: "late"}); err != nil {
			t.Fatal(err)
		}
		vs, _ = s.Vehicles(ctx, []string{"c2"})
		if len(vs) != 1 || !vs[0].Info.Registered || vs[0].State == nil {
			t.Errorf("got %+v, want registered with state", vs)
		}
	})

	t.Run("history ordered, deduplicated, ranged", func(t *testing.T) {
		s := newStore(t)
		base := now.Add(-2 * time.Hour).Truncate(time.Second)
		var pts []TrackPoint
		for _, i := range []int{5, 1, 3, 2, 4, 0} { // out of order
			pts = append(pts, TrackPoint{VehicleID: "h1", Fix: Fix{Time: base.Add(time.Duration(i) * time.Second), Seq: uint64(i), Lat: float64(i), Lon: 1, SpeedKmh: 10, Ignition: 1}})
		}
		// Two records with the same device time and different sequences.
		pts = append(pts, TrackPoint{VehicleID: "h1", Fix: Fix{Time: base.Add(2 * time.Second), Seq: 100, Lat: 2.5, Lon: 1}})
		b := Batch{Points: pts, Now: now, Retention: 24 * time.Hour}
		for range 2 { // written twice: a redelivery
			if err := s.Write(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Track(ctx, "h1", base, base.Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var lats []float64
		for _, f := range got {
			lats = append(lats, f.Lat)
		}
		if want := []float64{0, 1, 2, 2.5, 3, 4, 5}; !slices.Equal(lats, want) {
			t.Fatalf("got track %v, want %v", lats, want)
		}
		if got[1].Ignition != 1 || got[1].SpeedKmh != 10 || !got[1].Time.Equal(base.Add(time.Second)) {
			t.Errorf("got fix %+v", got[1])
		}
		got, _ = s.Track(ctx, "h1", base.Add(2*time.Second), base.Add(3*time.Second))
		if len(got) != 3 {
			t.Errorf("got %d fixes in [2s,3s], want 3", len(got))
		}
		if got, _ := s.Track(ctx, "other", base, now); len(got) != 0 {
			t.Errorf("got %d fixes for another vehicle", len(got))
		}
	})

	t.Run("retracted fixes leave the history", func(t *testing.T) {
		s := newStore(t)
		base := now.Add(-time.Hour).Truncate(time.Second)
		fix := func(i int) TrackPoint {
			return TrackPoint{VehicleID: "r1", Fix: Fix{Time: base.Add(time.Duration(i) * time.Second), Seq: uint64(i), Lat: float64(i), Lon: 1, SpeedKmh: 30, Ignition: 1}}
		}
		if err := s.Write(ctx, Batch{Points: []TrackPoint{fix(0), fix(1)}, Now: now, Retention: 24 * time.Hour}); err != nil {
			t.Fatal(err)
		}
		// The next batch adds a fix and retracts one written before and one of its own;
		// written twice, as a redelivery would.
		b := Batch{Points: []TrackPoint{fix(2), fix(3)}, Removed: []TrackPoint{fix(1), fix(3)}, Now: now, Retention: 24 * time.Hour}
		for range 2 {
			if err := s.Write(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Track(ctx, "r1", base, base.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		var lats []float64
		for _, f := range got {
			lats = append(lats, f.Lat)
		}
		if want := []float64{0, 2}; !slices.Equal(lats, want) {
			t.Fatalf("got track %v, want %v", lats, want)
		}
	})

	t.Run("history across days", func(t *testing.T) {
		s := newStore(t)
		midnight := now.Truncate(24 * time.Hour)
		pts := []TrackPoint{
			{VehicleID: "d1", Fix: Fix{Time: midnight.Add(-time.Minute), Lat: 1, Lon: 1}},
			{VehicleID: "d1", Fix: Fix{Time: midnight.Add(-24*time.Hour - time.Minute), Lat: 0, Lon: 1}},
			{VehicleID: "d1", Fix: Fix{Time: midnight.Add(time.Second), Lat: 2, Lon: 1}},
		}
		if err := s.Write(ctx, Batch{Points: pts, Now: now, Retention: 30 * 24 * time.Hour}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Track(ctx, "d1", midnight.Add(-48*time.Hour), midnight.Add(time.Hour))
		if err != nil || len(got) != 3 || got[0].Lat != 0 || got[2].Lat != 2 {
			t.Fatalf("got %+v, %v; want three fixes over three days in order", got, err)
		}
	})

	t.Run("history retention", func(t *testing.T) {
		s := newStore(t)
		pts := []TrackPoint{
			{VehicleID: "r1", Fix: Fix{Time: now.Add(-3 * 24 * time.Hour), Lat: 1, Lon: 1}},
			{VehicleID: "r1", Fix: Fix{Time: now.Add(-time.Hour), Lat: 2, Lon: 1}},
		}
		if err := s.Write(ctx, Batch{Points: pts, Now: now, Retention: 24 * time.Hour}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Track(ctx, "r1", now.Add(-4*24*time.Hour), now)
		if err != nil || len(got) != 1 || got[0].Lat != 2 {
			t.Fatalf("got %+v, %v; want only the fix inside the retention", got, err)
		}
	})

	t.Run("nearest agrees with brute force", func(t *testing.T) {
		s := newStore(t)
		rng := rand.New(rand.NewPCG(7, 11))
		var all []*State
		add := func(n int, gen func() (float64, float64)) {
			for range n {
				lat, lon := gen()
				st := stateAt(fmt.Sprintf("n%04d", len(all)), lat, lon, Status(2+rng.IntN(4)))
				all = append(all, st)
			}
		}
		world := func() (float64, float64) { return rng.Float64()*180 - 90, rng.Float64()*360 - 180 }
		// Clusters around the antimeridian and both poles, plus the whole world.
		add(300, world)
		add(150, func() (float64, float64) {
			lon := 177 + rng.Float64()*6
			if lon > 180 {
				lon -= 360
			}
			return rng.Float64()*4 - 2, lon
		})
		add(100, func() (float64, float64) { return 84 + rng.Float64()*6, rng.Float64()*360 - 180 })
		add(100, func() (float64, float64) { return -84 - rng.Float64()*6, rng.Float64()*360 - 180 })
		if err := s.Write(ctx, Batch{States: all, Now: now}); err != nil {
			t.Fatal(err)
		}
		if err := s.Register(ctx, Info{ID: "n0001", Groups: []string{"red"}}); err != nil {
			t.Fatal(err)
		}
		queries := []geo.Point{{Lat: 0, Lon: 180}, {Lat: 0, Lon: -180}, {Lat: 1, Lon: -179.9}, {Lat: 90, Lon: 0},
			{Lat: -90, Lon: 45}, {Lat: 89.5, Lon: -120}, {Lat: -86, Lon: 179.99}, {Lat: 52.5, Lon: 13.4}}
		for range 40 {
			lat, lon := world()
			queries = append(queries, geo.Point{Lat: lat, Lon: lon})
		}
		for qi, p := range queries {
			for _, tc := range []struct {
				k      int
				radius float64
				accept func(*Vehicle) bool
				name   string
			}{
				{10, 0, nil, "k10"},
				{1, 0, nil, "k1"},
				{25, 500_000, nil, "k25 r500km"},
				{5, 0, func(v *Vehicle) bool { return v.Status() == StatusIdle }, "idle only"},
			} {
				got, err := s.Nearest(ctx, NearestQuery{Point: p, K: tc.k, RadiusM: tc.radius, Accept: tc.accept})
				if err != nil {
					t.Fatal(err)
				}
				want := bruteNearest(all, p, tc.k, tc.radius, tc.accept)
				if len(got) != len(want) {
					t.Fatalf("query %d %v %s: got %d results, want %d", qi, p, tc.name, len(got), len(want))
				}
				for i := range want {
					// Ties aside, the same vehicles at the same distances in the same order.
					if math.Abs(got[i].DistanceM-want[i].d) > 0.01 {
						t.Fatalf("query %d %v %s: result %d got %s at %.2f m, want %s at %.2f m",
							qi, p, tc.name, i, got[i].Vehicle.Info.ID, got[i].DistanceM, want[i].id, want[i].d)
					}
				}
			}
		}
		// Group filter sees the registry.
		got, err := s.Nearest(ctx, NearestQuery{Point: geo.Point{}, K: 3, Accept: func(v *Vehicle) bool { return v.Info.InGroup("red") }})
		if err != nil || len(got) != 1 || got[0].Vehicle.Info.ID != "n0001" {
			t.Fatalf("got %v, %v; want only n0001", got, err)
		}
	})
}

type idDist struct {
	id string
	d  float64
}

func bruteNearest(all []*State, p geo.Point, k int, radius float64, accept func(*Vehicle) bool) []idDist {
	var out []idDist
	for _, st := range all {
		d := geo.DistanceM(p, st.Fix.Point())
		if radius > 0 && d > radius {
			continue
		}
		if accept != nil && !accept(&Vehicle{Info: Info{ID: st.VehicleID}, State: st}) {
			continue
		}
		out = append(out, idDist{st.VehicleID, d})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].d < out[j].d })
	return out[:min(k, len(out))]
}

// fencedRedisStore is a Redis store whose batch reads and writes check a generation
// marker (as the binaries' stores do): the marker is written, and the fence armed with it.
func fencedRedisStore(t *testing.T) (*RedisStore, *redis.Client) {
	c := redistest.Client(t)
	p := redistest.Prefix(t, c)
	st := NewRedisStore(c, p)
	t.Cleanup(func() { redistest.KeysUnder(t, c, p, st.KeyPrefix()) })
	f := storeguard.NewFence(st.KeyPrefix()+"epoch", nil)
	if err := c.Set(context.Background(), f.Key(), "e1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	f.SetEpoch("e1")
	return st.WithFence(f), c
}

// The contract holds with the generation check armed.
func TestFencedRedisStore(t *testing.T) {
	runStoreConformance(t, func(t *testing.T) Store {
		st, _ := fencedRedisStore(t)
		return st
	})
}

// A store that came back empty (its marker gone) refuses the batch's read and its write,
// and nothing of the refused write is applied.
func TestFencedRedisStoreRefusesAnEmptiedStore(t *testing.T) {
	ctx := context.Background()
	st, c := fencedRedisStore(t)
	now := time.Now().UTC()
	s1 := stateAt("v1", 52.5, 13.4, StatusMoving)
	if err := st.Write(ctx, Batch{States: []*State{s1}, Points: []TrackPoint{{VehicleID: "v1", Fix: s1.Fix}}, Now: now}); err != nil {
		t.Fatal(err)
	}
	if err := c.Del(ctx, st.KeyPrefix()+"epoch").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.States(ctx, []string{"v1"}); !errors.Is(err, storeguard.ErrStoreLost) {
		t.Errorf("states from an emptied store: %v, want ErrStoreLost", err)
	}
	s2 := stateAt("v2", 52.6, 13.5, StatusMoving)
	err := st.Write(ctx, Batch{States: []*State{s2}, Points: []TrackPoint{{VehicleID: "v2", Fix: s2.Fix}}, Now: now})
	if !errors.Is(err, storeguard.ErrStoreLost) {
		t.Errorf("write into an emptied store: %v, want ErrStoreLost", err)
	}
	if n, err := c.Exists(ctx, st.stateKey("v2"), st.histKey("v2", s2.Fix.Time.UTC().Truncate(24*time.Hour))).Result(); err != nil || n != 0 {
		t.Errorf("the refused write wrote %d keys (%v)", n, err)
	}
}
