package geofence

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// TestCorruptStateIsDeadLettered: a stored state the service cannot decode is not taken
// for "no state" (which would re-fire enters). The vehicle's records go to the dead-letter
// stream with a dead_letter event (dispatch turns it into an alert), the rejection is
// counted, and the records behind them in the same partition are applied.
func TestCorruptStateIsDeadLettered(t *testing.T) {
	c := redistest.Client(t)
	st := NewRedisStore(c, redistest.Prefix(t, c))
	b := openBus(t)
	const bad = "v-bad"
	good := ""
	for i := range 1000 {
		if v := fmt.Sprintf("v-good-%d", i); bus.PartitionOf(v, bus.DefaultPartitions) == bus.PartitionOf(bad, bus.DefaultPartitions) {
			good = v
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Set(ctx, st.vehicleKey(bad), "{not json", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(ctx, []string{bad}); err == nil {
		t.Fatal("Load of an undecodable state: no error")
	}
	in := startInstance(t, b, st, DefaultConfig())
	createZone(t, in.client, &fleetv1.Zone{ZoneId: "z", Name: "Z", Geojson: squareJSON(base, 300)})
	log := watchEvents(t, b)

	publish(t, b, bad, rec(bad, base, tStart, 10))
	publish(t, b, good, rec(good, geo.Destination(base, 0, 3000), tStart, 30), rec(good, base, tStart.Add(time.Minute), 10))
	waitFor(t, "the good vehicle's enter", func() bool { return log.byVehicle("enter")[good] == 1 })
	waitFor(t, "the dead_letter event", func() bool { return log.byVehicle(bus.EventKindDeadLetter)[bad] == 1 })
	if n := log.byVehicle("enter")[bad]; n != 0 {
		t.Errorf("the vehicle with the unreadable state raised %d enters, want 0", n)
	}
	if in.s.rej.Count("corrupt_state") == 0 {
		t.Error("corrupt state not counted")
	}
	ds, err := b.Stream(ctx, bus.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ds.GetLastMsgForSubject(ctx, bus.DeadLetterSubject(fmt.Sprintf("%s-p%02d", Source, bus.PartitionOf(bad, bus.DefaultPartitions))))
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	if a, err := bus.ParseSubject(m.Header.Get(bus.HeaderDeadSubject)); err != nil || a.Vehicle != bad {
		t.Errorf("dead letter's subject header %q: want a record subject of %s", m.Header.Get(bus.HeaderDeadSubject), bad)
	}
}
