package geofence

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/storeguard"
	"github.com/fleetwire/fleetwire/services/geofence/fence"
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

// runStoreConformance is the contract every Store meets.
func runStoreConformance(t *testing.T, newStore func(t *testing.T) Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	state := func(v string, zones ...string) fence.State {
		st := fence.State{Vehicle: v, LastTime: t0, LastLat: 52.5, LastLon: 13.4, HasLast: true}
		for _, z := range zones {
			st.Zones = append(st.Zones, fence.Membership{ZoneID: z, Since: t0.Add(-time.Minute), DwellFired: z == "b", Overspeed: z == "a"})
		}
		st.Pending = []fence.Pending{{ZoneID: "c", Count: 1}}
		return st
	}
	t.Run("load of unknown vehicles is empty", func(t *testing.T) {
		s := newStore(t)
		got, err := s.Load(ctx, []string{"nobody"})
		if err != nil || len(got) != 0 {
			t.Fatalf("got %v, %v; want empty, nil", got, err)
		}
		if got, err := s.Load(ctx, nil); err != nil || len(got) != 0 {
			t.Fatalf("load of nothing: got %v, %v", got, err)
		}
	})
	t.Run("save then load round-trips every field", func(t *testing.T) {
		s := newStore(t)
		want := state("v1", "a", "b")
		if err := s.Save(ctx, []Update{{State: want, Entered: []string{"a", "b"}}}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Load(ctx, []string{"v1", "v2"})
		if err != nil {
			t.Fatal(err)
		}
		g, ok := got["v1"]
		if !ok || len(got) != 1 {
			t.Fatalf("got %v, want only v1", got)
		}
		if g.Vehicle != want.Vehicle || !g.LastTime.Equal(want.LastTime) || g.LastLat != want.LastLat || g.LastLon != want.LastLon || !g.HasLast {
			t.Errorf("got %+v, want %+v", g, want)
		}
		if len(g.Zones) != 2 || g.Zones[0].ZoneID != "a" || !g.Zones[0].Overspeed || !g.Zones[1].DwellFired || !g.Zones[1].Since.Equal(want.Zones[1].Since) {
			t.Errorf("got memberships %+v, want %+v", g.Zones, want.Zones)
		}
		if len(g.Pending) != 1 || g.Pending[0] != (fence.Pending{ZoneID: "c", Count: 1}) {
			t.Errorf("got pending %+v, want %+v", g.Pending, want.Pending)
		}
	})
	t.Run("loaded states are copies", func(t *testing.T) {
		s := newStore(t)
		if err := s.Save(ctx, []Update{{State: state("v1", "a"), Entered: []string{"a"}}}); err != nil {
			t.Fatal(err)
		}
		got, _ := s.Load(ctx, []string{"v1"})
		st := got["v1"]
		st.Zones[0].ZoneID = "mutated"
		again, _ := s.Load(ctx, []string{"v1"})
		if again["v1"].Zones[0].ZoneID != "a" {
			t.Errorf("got %q after mutating a loaded copy, want a", again["v1"].Zones[0].ZoneID)
		}
	})
	t.Run("zone index follows entered and left", func(t *testing.T) {
		s := newStore(t)
		err := s.Save(ctx, []Update{
			{State: state("v2", "a"), Entered: []string{"a"}},
			{State: state("v1", "a", "b"), Entered: []string{"a", "b"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := s.VehiclesInZone(ctx, "a"); !slices.Equal(got, []string{"v1", "v2"}) {
			t.Errorf("zone a: got %v, want [v1 v2]", got)
		}
		if err := s.Save(ctx, []Update{{State: state("v1", "b"), Left: []string{"a"}}}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.VehiclesInZone(ctx, "a"); !slices.Equal(got, []string{"v2"}) {
			t.Errorf("zone a after v1 left: got %v, want [v2]", got)
		}
		// Saving the same update again (a redelivered batch) changes nothing.
		if err := s.Save(ctx, []Update{{State: state("v1", "b"), Left: []string{"a"}}}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.VehiclesInZone(ctx, "b"); !slices.Equal(got, []string{"v1"}) {
			t.Errorf("zone b: got %v, want [v1]", got)
		}
		if err := s.ForgetZone(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		if got, err := s.VehiclesInZone(ctx, "b"); err != nil || len(got) != 0 {
			t.Errorf("forgotten zone: got %v, %v; want empty", got, err)
		}
		if got, err := s.VehiclesInZone(ctx, "never"); err != nil || len(got) != 0 {
			t.Errorf("unknown zone: got %v, %v; want empty", got, err)
		}
	})
}

// fencedRedisStore is a Redis store whose reads and writes check a generation marker
// (as the binaries' stores do): the marker is written, and the fence armed with it.
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

// A store that came back empty (its marker gone) refuses both the batch's read and its
// write: no zone event is computed from the emptied state, and nothing is written into it.
func TestFencedRedisStoreRefusesAnEmptiedStore(t *testing.T) {
	ctx := context.Background()
	st, c := fencedRedisStore(t)
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	up := Update{State: fence.State{Vehicle: "v1", LastTime: t0, HasLast: true, Zones: []fence.Membership{{ZoneID: "a", Since: t0}}}, Entered: []string{"a"}}
	if err := st.Save(ctx, []Update{up}); err != nil {
		t.Fatal(err)
	}
	// The store loses everything, marker included (a restart without its data).
	if err := c.Del(ctx, st.KeyPrefix()+"epoch", st.vehicleKey("v1"), st.zoneKey("a")).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(ctx, []string{"v1"}); !errors.Is(err, storeguard.ErrStoreLost) {
		t.Errorf("load from an emptied store: %v, want ErrStoreLost", err)
	}
	up.State.Vehicle, up.Entered = "v2", []string{"b"}
	if err := st.Save(ctx, []Update{up}); !errors.Is(err, storeguard.ErrStoreLost) {
		t.Errorf("save into an emptied store: %v, want ErrStoreLost", err)
	}
	if n, err := c.Exists(ctx, st.vehicleKey("v2"), st.zoneKey("b")).Result(); err != nil || n != 0 {
		t.Errorf("the refused save wrote %d keys (%v)", n, err)
	}
	// Another generation (the store renewed by another instance) is refused alike.
	if err := c.Set(ctx, st.KeyPrefix()+"epoch", "e2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := st.Save(ctx, []Update{up}); !errors.Is(err, storeguard.ErrStoreLost) {
		t.Errorf("save into a renewed store: %v, want ErrStoreLost", err)
	}
}
