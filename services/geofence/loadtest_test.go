package geofence

import (
	"context"
	"fmt"
	"testing"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// A load-test vehicle driving into a zone leaves no occupancy and raises no event; a live
// vehicle of the same partition, published after it, does both.
func TestLoadTestVehiclesAreSkipped(t *testing.T) {
	b := openBus(t)
	in := startInstance(t, b, NewMemoryStore(), DefaultConfig())
	ctx := context.Background()
	createZone(t, in.client, &fleetv1.Zone{ZoneId: "depot", Name: "Depot", Geojson: squareJSON(base, 300)})
	log := watchEvents(t, b)

	n, err := b.Partitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lt := telemetry.LoadTestPrefix + "run1-0001"
	// One consumer per partition handles its records in order: once the live vehicle's
	// event is out, the load-test vehicle's earlier records have been handled too.
	live := ""
	for i := 0; live == ""; i++ {
		if id := fmt.Sprintf("van-%d", i); bus.PartitionOf(id, n) == bus.PartitionOf(lt, n) {
			live = id
		}
	}
	outside := base
	outside.Lon -= 0.02
	for _, v := range []string{lt, live} {
		publish(t, b, v, rec(v, outside, tStart, 30), rec(v, base, tStart.Add(10e9), 30), rec(v, base, tStart.Add(20e9), 30))
	}
	waitFor(t, "the live vehicle's enter event", func() bool { return log.byVehicle("enter")[live] > 0 })
	if got := log.byVehicle("enter")[lt]; got != 0 {
		t.Fatalf("load-test vehicle raised %d enter events", got)
	}
	occ, err := in.client.VehiclesInZone(ctx, &fleetv1.VehiclesInZoneRequest{ZoneId: "depot"})
	if err != nil {
		t.Fatal(err)
	}
	ids := occ.GetVehicleIds()
	if len(ids) != 1 || ids[0] != live {
		t.Fatalf("occupants %v, want only %s", ids, live)
	}
}
