package fence_test

import (
	"fmt"
	"time"

	"github.com/fleetwire/fleetwire/services/geofence/fence"
)

// A depot as a GeoJSON polygon, one vehicle driving in and out of it.
func Example() {
	z, err := fence.Compile(fence.Spec{
		ID: "depot", Name: "Depot", Alert: fence.AlertBoth,
		GeoJSON: `{"type":"Polygon","coordinates":[[[13.40,52.52],[13.41,52.52],[13.41,52.53],[13.40,52.53],[13.40,52.52]]]}`,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ix := fence.NewIndex([]*fence.Zone{z})
	rules := fence.DefaultRules()
	st := &fence.State{Vehicle: "truck-7"}
	t0 := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	var events []fence.Event
	for i, lon := range []float64{13.39, 13.405, 13.42} {
		events, _ = rules.Step(ix, st, fence.Fix{Time: t0.Add(time.Duration(i) * time.Minute), Lat: 52.525, Lon: lon, SpeedKmh: 30}, events)
	}
	for _, e := range events {
		fmt.Println(e.Kind, e.ZoneID, e.Time.Format("15:04"))
	}
	// Output:
	// enter depot 08:01
	// exit depot 08:02
}

// Invalid GeoJSON is refused with a message naming the problem.
func ExampleCompile() {
	_, err := fence.Compile(fence.Spec{ID: "z", Name: "Z",
		GeoJSON: `{"type":"Polygon","coordinates":[[[10,50],[10.1,50],[10.1,50.1],[10,50.1]]]}`})
	fmt.Println(err)
	// Output:
	// invalid zone: ring not closed: polygon ring 0 (exterior) starts at [10, 50] and ends at [10, 50.1]; the last position must repeat the first
}
