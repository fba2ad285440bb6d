package maintenance

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
)

// The memory store hands out clones; a clone must equal the original in every field
// (checked against a JSON round trip, which is what the Redis store does) and share no
// memory with it.
func TestVehicleStateCloneIsDeep(t *testing.T) {
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	v := &VehicleState{
		VehicleID: "v1", LastTime: now, Records: 7, OdometerM: 1234, HasOdometer: true,
		Faults: map[string]*FaultCode{"P0301": {Code: "P0301", Active: true, FirstSeen: now, Occurrences: 2}},
		Alerts: map[string]*AlertState{"coolant": {Since: now, Fired: true, Value: 110}},
		Plans:  map[string]*PlanTrack{"oil": {ServiceID: "s1", Cycle: 3, Base: Baseline{OdometerKm: 10, Time: now}}},
		Fuel: fuel.State{
			LastTime: now, Raw: []float64{1, 2}, RawTimes: []int64{1, 2}, DriveRaw: []float64{3},
			Stable: []float64{4}, StableRaw: []float64{5}, StableRawT: []int64{5}, ChangeVals: []float64{6},
			ChangeRaw: []float64{7}, ChangeTimes: []int64{7},
			Pending: &fuel.Event{Litres: 20, Start: now}, Carry: &fuel.Carry{Dir: 1, End: now},
			DriveBuf:   []fuel.RefReading{{T: 1, L: 8}},
			Across:     &fuel.Across{ArrL: 9, Held: &fuel.Event{Litres: 30, Start: now}},
			LagSamples: []float64{10},
		},
	}
	// A reference field added later must be cloned too: make this test populate it.
	for _, rv := range []reflect.Value{reflect.ValueOf(*v), reflect.ValueOf(v.Fuel)} {
		for i := 0; i < rv.NumField(); i++ {
			switch f := rv.Field(i); f.Kind() {
			case reflect.Slice, reflect.Map, reflect.Pointer:
				if f.IsNil() {
					t.Fatalf("%s.%s is not populated here: populate it and make clone copy it", rv.Type().Name(), rv.Type().Field(i).Name)
				}
			}
		}
	}
	c := v.clone()
	var viaJSON VehicleState
	b, _ := json.Marshal(v)
	if err := json.Unmarshal(b, &viaJSON); err != nil {
		t.Fatal(err)
	}
	cb, _ := json.Marshal(c)
	if string(cb) != string(b) {
		t.Fatalf("clone differs from the original:\n got %s\nwant %s", cb, b)
	}
	// Mutate everything reachable from the clone; the original must not change.
	c.Faults["P0301"].Occurrences = 99
	c.Alerts["coolant"].Value = 0
	c.Plans["oil"].Cycle = 0
	c.Fuel.Raw[0], c.Fuel.RawTimes[0], c.Fuel.DriveRaw[0] = -1, -1, -1
	c.Fuel.Stable[0], c.Fuel.StableRaw[0], c.Fuel.StableRawT[0] = -1, -1, -1
	c.Fuel.ChangeVals[0], c.Fuel.ChangeRaw[0], c.Fuel.ChangeTimes[0] = -1, -1, -1
	c.Fuel.Pending.Litres, c.Fuel.Carry.Dir = -1, -1
	c.Fuel.DriveBuf[0].L, c.Fuel.Across.ArrL, c.Fuel.Across.Held.Litres = -1, -1, -1
	c.Fuel.LagSamples[0] = -1
	var after VehicleState
	b2, _ := json.Marshal(v)
	_ = json.Unmarshal(b2, &after)
	if !reflect.DeepEqual(after, viaJSON) {
		t.Fatalf("mutating the clone changed the original:\n got %s\nwant %s", b2, b)
	}
}
