package maintenance

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/storeguard"
	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
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

// The contract holds with the generation check armed (as in the binaries), and a store
// whose marker is gone refuses the batch's vehicle reads and writes.
func TestFencedRedisStore(t *testing.T) {
	ctx := context.Background()
	fenced := func(t *testing.T) (*RedisStore, *redis.Client) {
		c := redistest.Client(t)
		p := redistest.Prefix(t, c)
		st := NewRedisStore(c, p)
		t.Cleanup(func() { redistest.KeysUnder(t, c, p, st.KeyPrefix()) })
		f := storeguard.NewFence(st.KeyPrefix()+"epoch", nil)
		if err := c.Set(ctx, f.Key(), "e1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		f.SetEpoch("e1")
		return st.WithFence(f), c
	}
	runStoreConformance(t, func(t *testing.T) Store {
		st, _ := fenced(t)
		return st
	})
	t.Run("emptied store refuses", func(t *testing.T) {
		st, c := fenced(t)
		if err := c.Del(ctx, st.KeyPrefix()+"epoch").Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.GetVehicles(ctx, []string{"v1"}); !errors.Is(err, storeguard.ErrStoreLost) {
			t.Errorf("read from an emptied store: %v, want ErrStoreLost", err)
		}
		if err := st.PutVehicles(ctx, []*VehicleState{{VehicleID: "v1"}}); !errors.Is(err, storeguard.ErrStoreLost) {
			t.Errorf("write into an emptied store: %v, want ErrStoreLost", err)
		}
		if keys, err := c.Keys(ctx, st.KeyPrefix()+"*").Result(); err != nil || len(keys) != 0 {
			t.Errorf("the refused write left keys %v (%v)", keys, err)
		}
	})
}

var t0 = time.Date(2026, 5, 4, 8, 0, 0, 0, time.UTC)

// runStoreConformance is the one suite every Store implementation passes.
func runStoreConformance(t *testing.T, newStore func(t *testing.T) Store) {
	ctx := context.Background()

	t.Run("plans", func(t *testing.T) {
		st := newStore(t)
		if _, err := st.GetPlan(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetPlan missing: got %v, want ErrNotFound", err)
		}
		a := Plan{ID: "b-oil", Name: "Oil", VehicleID: "V1", EveryKm: 15000, Items: []string{"oil", "filter"}, Created: t0}
		b := Plan{ID: "a-tyres", Name: "Tyres", GroupID: "G1", EveryDays: 180, Created: t0}
		for _, p := range []Plan{a, b, a} { // putting twice replaces
			if err := st.PutPlan(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		got, err := st.GetPlan(ctx, "b-oil")
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Fatalf("GetPlan: got %+v, %v; want %+v", got, err, a)
		}
		list, err := st.ListPlans(ctx)
		if err != nil || len(list) != 2 || list[0].ID != "a-tyres" || list[1].ID != "b-oil" {
			t.Fatalf("ListPlans: got %+v, %v; want a-tyres, b-oil", list, err)
		}
		if err := st.DeletePlan(ctx, "b-oil"); err != nil {
			t.Fatal(err)
		}
		if err := st.DeletePlan(ctx, "b-oil"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second DeletePlan: got %v, want ErrNotFound", err)
		}
		if list, _ := st.ListPlans(ctx); len(list) != 1 {
			t.Fatalf("ListPlans after delete: got %d plans, want 1", len(list))
		}
	})

	t.Run("groups", func(t *testing.T) {
		st := newStore(t)
		if _, err := st.GetGroup(ctx, "G"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetGroup missing: got %v, want ErrNotFound", err)
		}
		g := Group{ID: "G1", Vehicles: []string{"V1", "V2"}}
		if err := st.PutGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		g.Vehicles = []string{"V3"}
		if err := st.PutGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		got, err := st.GetGroup(ctx, "G1")
		if err != nil || !reflect.DeepEqual(got, g) {
			t.Fatalf("GetGroup: got %+v, %v; want %+v (replaced)", got, err, g)
		}
		if list, err := st.ListGroups(ctx); err != nil || len(list) != 1 {
			t.Fatalf("ListGroups: got %+v, %v", list, err)
		}
	})

	t.Run("service book", func(t *testing.T) {
		st := newStore(t)
		e1 := ServiceEntry{ID: "s1", VehicleID: "V1", PlanID: "oil", Time: t0, OdometerKm: 1000, HasOdometer: true, Cost: 120, Items: []ServiceItem{{Name: "oil", Cost: 80}, {Name: "filter", Cost: 40}}}
		e2 := ServiceEntry{ID: "s2", VehicleID: "V1", PlanID: "oil", Time: t0.Add(48 * time.Hour), OdometerKm: 16000, HasOdometer: true}
		e0 := ServiceEntry{ID: "s0", VehicleID: "V1", Time: t0.Add(-time.Hour), Notes: "wipers"}
		// Added out of order, and one twice: the latest per plan is by time, not arrival.
		for _, e := range []ServiceEntry{e2, e1, e0, e1} {
			if err := st.AddService(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		list, err := st.ListServices(ctx, "V1")
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range list {
			ids = append(ids, e.ID)
		}
		if want := []string{"s2", "s1", "s0"}; !reflect.DeepEqual(ids, want) {
			t.Fatalf("ListServices: got %v, want %v (newest first, no duplicate)", ids, want)
		}
		if !reflect.DeepEqual(list[1], e1) {
			t.Fatalf("entry round trip: got %+v, want %+v", list[1], e1)
		}
		latest, err := st.LatestServices(ctx, []string{"V1", "V2"})
		if err != nil || len(latest) != 1 || len(latest["V1"]) != 1 || latest["V1"]["oil"].ID != "s2" {
			t.Fatalf("LatestServices: got %+v, %v; want V1: oil → s2", latest, err)
		}
		if l, _ := st.ListServices(ctx, "V2"); len(l) != 0 {
			t.Fatalf("ListServices of another vehicle: got %d, want 0", len(l))
		}
	})

	t.Run("vehicle states", func(t *testing.T) {
		st := newStore(t)
		got, err := st.GetVehicles(ctx, []string{"V1"})
		if err != nil || len(got) != 0 {
			t.Fatalf("GetVehicles before put: got %v, %v; want empty", got, err)
		}
		v := newVehicleState("V1")
		v.LastTime, v.OdometerM, v.HasOdometer = t0, 1234, true
		v.Faults = map[string]*FaultCode{"P0301": {Code: "P0301", Active: true, FirstSeen: t0, LastSeen: t0, Occurrences: 1, Severity: SeverityHigh}}
		v.Plans = map[string]*PlanTrack{"oil": {Base: Baseline{OdometerKm: 1, HasOdometer: true, Time: t0}, Notified: StateDueSoon, Cycle: 2}}
		v.Alerts = map[string]*AlertState{"coolant_high": {Since: t0, Fired: true, Value: 110}}
		v.Fuel.Stable = []float64{40, 41}
		v.Fuel.Pending = &fuel.Event{Kind: fuel.KindRefuel, Start: t0, End: t0.Add(time.Minute), Litres: 50}
		w := newVehicleState("V2")
		if err := st.PutVehicles(ctx, []*VehicleState{v, w}); err != nil {
			t.Fatal(err)
		}
		got, err = st.GetVehicles(ctx, []string{"V1", "V2", "V3"})
		if err != nil || len(got) != 2 {
			t.Fatalf("GetVehicles: got %d, %v; want 2", len(got), err)
		}
		if !reflect.DeepEqual(got["V1"], v) {
			t.Fatalf("vehicle round trip:\n got %+v\nwant %+v", got["V1"], v)
		}
		ids, err := st.ListVehicleIDs(ctx)
		if err != nil || !reflect.DeepEqual(ids, []string{"V1", "V2"}) {
			t.Fatalf("ListVehicleIDs: got %v, %v", ids, err)
		}
		// A copy handed out is not the stored value.
		got["V1"].OdometerM = 0
		again, _ := st.GetVehicles(ctx, []string{"V1"})
		if again["V1"].OdometerM != 1234 {
			t.Fatalf("store shares state with callers: got odometer %v, want 1234", again["V1"].OdometerM)
		}
	})

	t.Run("fuel profiles", func(t *testing.T) {
		st := newStore(t)
		p := fuel.Profile{CapacityL: 300, Calibration: []fuel.CalPoint{{Raw: 0, Litres: 0}, {Raw: 4095, Litres: 300}}, SensorKey: "fuel_raw"}
		if err := st.PutFuelProfile(ctx, "V1", p); err != nil {
			t.Fatal(err)
		}
		got, err := st.GetFuelProfiles(ctx, []string{"V1", "V2"})
		if err != nil || len(got) != 1 || !reflect.DeepEqual(got["V1"], p) {
			t.Fatalf("GetFuelProfiles: got %+v, %v; want V1 → %+v", got, err, p)
		}
	})

	t.Run("fuel events", func(t *testing.T) {
		st := newStore(t)
		mk := func(id string, k fuel.Kind, start time.Time, l float64) FuelEvent {
			return FuelEvent{ID: id, VehicleID: "V1", Event: fuel.Event{Kind: k, Start: start, End: start.Add(5 * time.Minute), Litres: l, Lat: 45, Lon: 9, HasPosition: true}}
		}
		a := mk("r1", fuel.KindRefuel, t0, 200)
		b := mk("d1", fuel.KindDrain, t0.Add(2*time.Hour), 30)
		c := mk("r2", fuel.KindRefuel, t0.Add(48*time.Hour), 150)
		for range 2 { // redelivery stores each once
			if err := st.AddFuelEvents(ctx, []FuelEvent{c, a, b}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := st.ListFuelEvents(ctx, "V1", t0, t0.Add(24*time.Hour))
		if err != nil || len(got) != 2 || got[0].ID != "r1" || got[1].ID != "d1" {
			t.Fatalf("ListFuelEvents: got %+v, %v; want r1, d1", got, err)
		}
		if !reflect.DeepEqual(got[0], a) {
			t.Fatalf("event round trip: got %+v, want %+v", got[0], a)
		}
		// [from, to): an event starting exactly at to is not included.
		if got, _ := st.ListFuelEvents(ctx, "V1", t0.Add(time.Minute), t0.Add(48*time.Hour)); len(got) != 1 || got[0].ID != "d1" {
			t.Fatalf("ListFuelEvents half-open: got %+v, want d1 only", got)
		}
	})

	t.Run("fuel samples", func(t *testing.T) {
		st := newStore(t)
		var ss []FuelSample
		for i := range 6 {
			ss = append(ss, FuelSample{Time: t0.Add(time.Duration(i) * time.Hour), LevelL: 100 - float64(i), HasLevel: true, DistanceM: float64(i) * 1000})
		}
		if err := st.AddFuelSamples(ctx, map[string][]FuelSample{"V1": ss[3:]}); err != nil {
			t.Fatal(err)
		}
		if err := st.AddFuelSamples(ctx, map[string][]FuelSample{"V1": ss[:4]}); err != nil { // overlaps: replaced, not duplicated
			t.Fatal(err)
		}
		got, err := st.ListFuelSamples(ctx, "V1", t0.Add(90*time.Minute), t0.Add(4*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if want := ss[1:5]; !reflect.DeepEqual(got, want) {
			t.Fatalf("ListFuelSamples: got %+v, want %+v (one before from, then [from, to])", got, want)
		}
		if got, _ := st.ListFuelSamples(ctx, "V2", t0, t0.Add(time.Hour)); len(got) != 0 {
			t.Fatalf("ListFuelSamples of another vehicle: got %d, want 0", len(got))
		}
	})
}
