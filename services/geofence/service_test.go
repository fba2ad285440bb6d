package geofence

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/eventpub"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func testLog() *slog.Logger {
	if os.Getenv("GEOFENCE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func openBus(t testing.TB) *bus.Bus {
	t.Helper()
	return natstest.Open(t, natstest.Options{Log: testLog()})
}

// clientBus is a separate connection to b's server, as another process would have; a
// stopped instance closes it, so the server forgets its outstanding pull requests.
func clientBus(t testing.TB, b *bus.Bus) *bus.Bus {
	t.Helper()
	return natstest.Client(t, b)
}

// instance is a running service with its gRPC server.
type instance struct {
	s      *Service
	client fleetv1.GeofenceServiceClient
	addr   string
	stop   func() // stops Run and the server, and waits for both
}

func startInstance(t testing.TB, b *bus.Bus, st Store, cfg Config) *instance {
	t.Helper()
	log := testLog()
	s, err := New(cfg, b, st, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpcserver.New(log, nil)
	s.Register(gs.GRPC)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := s.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	go func() { defer wg.Done(); _ = gs.Serve(ctx, time.Second) }()
	conn, err := grpc.NewClient(gs.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	once := sync.Once{}
	stop := func() { once.Do(func() { cancel(); wg.Wait(); conn.Close() }) }
	t.Cleanup(stop)
	select {
	case <-s.ready:
	case <-time.After(20 * time.Second):
		t.Fatal("zones not loaded after 20s")
	}
	return &instance{s: s, client: fleetv1.NewGeofenceServiceClient(conn), addr: gs.Addr(), stop: stop}
}

var base = geo.Point{Lat: 48.137, Lon: 11.575} // Munich
var tStart = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func squareJSON(c geo.Point, halfM float64) string {
	dLat := halfM / 111195.0
	dLon := halfM / (111195.0 * math.Cos(c.Lat*math.Pi/180))
	return fmt.Sprintf(`{"type":"Polygon","coordinates":[[[%[1]f,%[2]f],[%[3]f,%[2]f],[%[3]f,%[4]f],[%[1]f,%[4]f],[%[1]f,%[2]f]]]}`,
		c.Lon-dLon, c.Lat-dLat, c.Lon+dLon, c.Lat+dLat)
}

func rec(v string, p geo.Point, at time.Time, speed float64) telemetry.Record {
	return telemetry.Record{VehicleID: v, DeviceTime: at, Lat: p.Lat, Lon: p.Lon, SpeedKmh: speed, FixValid: true, Satellites: 9, HDOP: 0.9}
}

func publish(t testing.TB, b *bus.Bus, v string, recs ...telemetry.Record) {
	t.Helper()
	data, err := wire.EncodeBatch(v, time.Now(), recs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.Publish(ctx, bus.UpSubject(v, bus.KindTelemetry), data); err != nil {
		t.Fatal(err)
	}
}

// eventLog records the zone events published on NATS, once per event id (a batch
// redelivered after a stop may publish an event again with the same id; JetStream's
// duplicate window drops it from the stream, and consumers key on the id).
type eventLog struct {
	mu   sync.Mutex
	evs  []*fleetv1.Event
	seen map[string]bool
}

func watchEvents(t testing.TB, b *bus.Bus) *eventLog {
	t.Helper()
	l := &eventLog{seen: map[string]bool{}}
	sub, err := b.Conn().Subscribe(bus.EventSourceFilter(Source), func(m *nats.Msg) {
		var e fleetv1.Event
		if err := proto.Unmarshal(m.Data, &e); err != nil {
			t.Errorf("undecodable event: %v", err)
			return
		}
		l.mu.Lock()
		if !l.seen[e.GetEventId()] {
			l.seen[e.GetEventId()] = true
			l.evs = append(l.evs, &e)
		}
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

func (l *eventLog) count(kind string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.evs {
		if kind == "" || e.GetKind() == kind {
			n++
		}
	}
	return n
}

func (l *eventLog) byVehicle(kind string) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, e := range l.evs {
		if e.GetKind() == kind {
			out[e.GetVehicleId()]++
		}
	}
	return out
}

// waitFor polls cond for up to 20 s (async pipelines on a shared machine).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	// Below the 30 s acknowledgement timeout: a record that only arrives through a
	// redelivery after that timeout is a failure, not slowness.
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func createZone(t testing.TB, c fleetv1.GeofenceServiceClient, z *fleetv1.Zone) *fleetv1.Zone {
	t.Helper()
	resp, err := c.CreateZone(context.Background(), &fleetv1.CreateZoneRequest{Zone: z})
	if err != nil {
		t.Fatalf("create zone %s: %v", z.GetZoneId(), err)
	}
	return resp.GetZone()
}

func TestServiceEndToEnd(t *testing.T) {
	b := openBus(t)
	in := startInstance(t, b, NewMemoryStore(), DefaultConfig())
	ctx := context.Background()
	c := in.client
	depot := createZone(t, c, &fleetv1.Zone{ZoneId: "depot", Name: "Depot", Geojson: squareJSON(base, 300), Tags: []string{"site"}, SpeedLimitKmh: 20})
	if depot.GetShape() != "Polygon" || depot.GetRevision() == 0 || depot.GetAlert() != fleetv1.ZoneAlert_ZONE_ALERT_ENTER_EXIT {
		t.Errorf("got created zone %+v, want a polygon with a revision and enter/exit alerts", depot)
	}
	createZone(t, c, &fleetv1.Zone{ZoneId: "yard", Name: "Yard", Geojson: fmt.Sprintf(`{"type":"Point","coordinates":[%f,%f]}`, base.Lon, base.Lat), RadiusM: 100, Alert: fleetv1.ZoneAlert_ZONE_ALERT_ENTER})

	// Invalid zones are refused with a message naming the problem.
	for _, tc := range []struct {
		geojson, want string
	}{
		{`{"type":"Polygon","coordinates":[[[11,48],[11.1,48],[11.1,48.1],[11,48.1]]]}`, "ring not closed"},
		{`{"type":"Polygon",`, "malformed GeoJSON"},
		{`{"type":"Polygon","coordinates":[[[11,48],[200,48],[11.1,48.1],[11,48]]]}`, "coordinate out of range"},
		{`{"type":"Polygon","coordinates":[]}`, "empty geometry"},
	} {
		_, err := c.CreateZone(ctx, &fleetv1.CreateZoneRequest{Zone: &fleetv1.Zone{ZoneId: "bad", Name: "Bad", Geojson: tc.geojson}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
			t.Errorf("create %s: got %v, want InvalidArgument mentioning %q", tc.geojson, err, tc.want)
		}
	}
	if _, err := c.CreateZone(ctx, &fleetv1.CreateZoneRequest{Zone: &fleetv1.Zone{ZoneId: "depot", Name: "Again", Geojson: squareJSON(base, 10)}}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("duplicate create: got %v, want AlreadyExists", err)
	}

	watch, err := c.WatchZoneEvents(ctx, &fleetv1.WatchZoneEventsRequest{ZoneId: "depot"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Header(); err != nil {
		t.Fatal(err)
	}
	watched := make(chan *fleetv1.Event, 16)
	go func() {
		for {
			r, err := watch.Recv()
			if err != nil {
				if ctx.Err() == nil {
					t.Logf("watch ended: %v", err)
				}
				close(watched)
				return
			}
			watched <- r.GetEvent()
		}
	}()
	log := watchEvents(t, b)

	// v1 drives from 1 km west through the centre (fast inside the depot) to 1 km east.
	var recs []telemetry.Record
	for i := 0; i <= 20; i++ {
		p := geo.Destination(base, 90, float64(i*100-1000))
		recs = append(recs, rec("v1", p, tStart.Add(time.Duration(i)*10*time.Second), 36))
	}
	publish(t, b, "v1", recs[:11]...) // up to the centre
	waitFor(t, "v1 inside the depot", func() bool {
		r, err := c.VehiclesInZone(ctx, &fleetv1.VehiclesInZoneRequest{ZoneId: "depot"})
		return err == nil && len(r.GetVehicleIds()) == 1 && r.GetVehicleIds()[0] == "v1"
	})
	zr, err := c.ZonesForVehicle(ctx, &fleetv1.ZonesForVehicleRequest{VehicleId: "v1"})
	if err != nil || len(zr.GetZones()) != 2 || zr.GetZones()[0].GetZoneId() != "depot" || zr.GetZones()[1].GetZoneId() != "yard" {
		t.Errorf("zones for v1: got %v, %v; want depot and yard", zr.GetZones(), err)
	}
	publish(t, b, "v1", recs[11:]...)
	waitFor(t, "enter, overspeed, exit on the depot and enter on the yard", func() bool {
		return log.count("exit") == 1 && log.count("enter") == 2 && log.count("overspeed_in_zone") == 1
	})
	var got []string
	for len(got) < 3 {
		select {
		case e := <-watched:
			got = append(got, e.GetKind())
			if e.GetAttributes()["zone_id"] != "depot" || e.GetVehicleId() != "v1" || e.GetEventId() == "" || e.GetTime() == nil || e.GetPosition() == nil {
				t.Errorf("watched event %v lacks zone, vehicle, id, time or position", e)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("watch got %v, want 3 depot events", got)
		}
	}
	if strings.Join(got, ",") != "enter,overspeed_in_zone,exit" {
		t.Errorf("watch got %v, want enter, overspeed_in_zone, exit", got)
	}

	lr, err := c.ListZoneEvents(ctx, &fleetv1.ListZoneEventsRequest{VehicleId: "v1"})
	if err != nil || len(lr.GetEvents()) != 4 {
		t.Fatalf("list events of v1: got %d, %v; want 4", len(lr.GetEvents()), err)
	}
	lr, err = c.ListZoneEvents(ctx, &fleetv1.ListZoneEventsRequest{ZoneId: "yard", To: timestamppb.Now()})
	if err != nil || len(lr.GetEvents()) != 1 || lr.GetEvents()[0].GetKind() != "enter" {
		t.Fatalf("list events of the yard: got %v, %v; want one enter", lr.GetEvents(), err)
	}
	lr, err = c.ListZoneEvents(ctx, &fleetv1.ListZoneEventsRequest{ZoneId: "depot", From: timestamppb.New(time.Now().Add(time.Hour))})
	if err != nil || len(lr.GetEvents()) != 0 {
		t.Errorf("list events from the future: got %d, %v; want none", len(lr.GetEvents()), err)
	}
	if _, err := c.ListZoneEvents(ctx, &fleetv1.ListZoneEventsRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("list events without filter: got %v, want InvalidArgument", err)
	}

	ar, err := c.ZonesAtPoint(ctx, &fleetv1.ZonesAtPointRequest{Point: &fleetv1.LatLng{Latitude: base.Lat, Longitude: base.Lon}})
	if err != nil || len(ar.GetZones()) != 2 {
		t.Errorf("zones at the centre: got %v, %v; want 2", ar.GetZones(), err)
	}
	if _, err := c.ZonesAtPoint(ctx, &fleetv1.ZonesAtPointRequest{Point: &fleetv1.LatLng{Latitude: 91}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("zones at lat 91: got %v, want InvalidArgument", err)
	}
	ex, err := c.ExportZones(ctx, &fleetv1.ExportZonesRequest{Tag: "site"})
	if err != nil || !strings.Contains(ex.GetGeojson(), `"FeatureCollection"`) || !strings.Contains(ex.GetGeojson(), `"depot"`) || strings.Contains(ex.GetGeojson(), `"yard"`) {
		t.Errorf("export of tag site: got %s, %v; want a collection with the depot only", ex.GetGeojson(), err)
	}
	lz, err := c.ListZones(ctx, &fleetv1.ListZonesRequest{})
	if err != nil || len(lz.GetZones()) != 2 || lz.GetZones()[0].GetZoneId() != "depot" {
		t.Errorf("list zones: got %v, %v", lz.GetZones(), err)
	}

	// Update with a stale revision is refused; with the right one it applies.
	upd := proto.Clone(depot).(*fleetv1.Zone)
	upd.Name = "Depot North"
	if _, err := c.UpdateZone(ctx, &fleetv1.UpdateZoneRequest{Zone: upd, ExpectedRevision: depot.GetRevision() + 100}); status.Code(err) != codes.Aborted {
		t.Errorf("stale update: got %v, want Aborted", err)
	}
	ur, err := c.UpdateZone(ctx, &fleetv1.UpdateZoneRequest{Zone: upd, ExpectedRevision: depot.GetRevision()})
	if err != nil || ur.GetZone().GetRevision() <= depot.GetRevision() {
		t.Fatalf("update: got %v, %v", ur, err)
	}
	gz, err := c.GetZone(ctx, &fleetv1.GetZoneRequest{ZoneId: "depot"})
	if err != nil || gz.GetZone().GetName() != "Depot North" {
		t.Errorf("get after update: got %v, %v; want the new name", gz, err)
	}
	if _, err := c.UpdateZone(ctx, &fleetv1.UpdateZoneRequest{Zone: &fleetv1.Zone{ZoneId: "nope", Name: "x", Geojson: squareJSON(base, 10)}}); status.Code(err) != codes.NotFound {
		t.Errorf("update of a missing zone: got %v, want NotFound", err)
	}
	if _, err := c.DeleteZone(ctx, &fleetv1.DeleteZoneRequest{ZoneId: "yard"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetZone(ctx, &fleetv1.GetZoneRequest{ZoneId: "yard"}); status.Code(err) != codes.NotFound {
		t.Errorf("get after delete: got %v, want NotFound", err)
	}
	if _, err := c.DeleteZone(ctx, &fleetv1.DeleteZoneRequest{ZoneId: "yard"}); status.Code(err) != codes.NotFound {
		t.Errorf("second delete: got %v, want NotFound", err)
	}
}

func TestZoneChangesReachEveryInstance(t *testing.T) {
	b := openBus(t)
	a := startInstance(t, b, NewMemoryStore(), Config{Partitions: []int{0, 1, 2, 3, 4, 5, 6, 7}})
	other := startInstance(t, b, NewMemoryStore(), Config{Partitions: []int{8, 9, 10, 11, 12, 13, 14, 15}})
	ctx := context.Background()
	createZone(t, a.client, &fleetv1.Zone{ZoneId: "site", Name: "Site", Geojson: squareJSON(base, 300)})
	// Within a second, without a restart (generous polling: the machine is shared).
	waitFor(t, "the other instance to see the new zone", func() bool {
		_, err := other.client.GetZone(ctx, &fleetv1.GetZoneRequest{ZoneId: "site"})
		return err == nil
	})
	upd := &fleetv1.Zone{ZoneId: "site", Name: "Site 2", Geojson: squareJSON(base, 500)}
	if _, err := a.client.UpdateZone(ctx, &fleetv1.UpdateZoneRequest{Zone: upd}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other instance to see the update", func() bool {
		r, err := other.client.GetZone(ctx, &fleetv1.GetZoneRequest{ZoneId: "site"})
		return err == nil && r.GetZone().GetName() == "Site 2"
	})
	if _, err := other.client.DeleteZone(ctx, &fleetv1.DeleteZoneRequest{ZoneId: "site"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first instance to see the delete", func() bool {
		_, err := a.client.GetZone(ctx, &fleetv1.GetZoneRequest{ZoneId: "site"})
		return status.Code(err) == codes.NotFound
	})
}

// TestRestartExactlyOnce: vehicles inside a zone, the service stops, some vehicles
// leave while it is down, it restarts → exactly one exit each, no second enter.
func TestRestartExactlyOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) Store
	}{
		{"memory", func(t *testing.T) Store { return NewMemoryStore() }},
		{"redis", func(t *testing.T) Store {
			c := redistest.Client(t)
			return NewRedisStore(c, redistest.Prefix(t, c))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := openBus(t)
			st := tc.store(t)
			log := watchEvents(t, b)
			firstBus := clientBus(t, b)
			first := startInstance(t, firstBus, st, DefaultConfig())
			createZone(t, first.client, &fleetv1.Zone{ZoneId: "depot", Name: "Depot", Geojson: squareJSON(base, 500), Alert: fleetv1.ZoneAlert_ZONE_ALERT_MUST_STAY_INSIDE})
			createZone(t, first.client, &fleetv1.Zone{ZoneId: "gate", Name: "Gate", Geojson: squareJSON(base, 500), Alert: fleetv1.ZoneAlert_ZONE_ALERT_ENTER_EXIT})
			const n = 10
			for i := 0; i < n; i++ {
				v := fmt.Sprintf("v%02d", i)
				p := geo.Destination(base, float64(i*36), 100)
				publish(t, b, v, rec(v, geo.Destination(base, 0, 3000), tStart, 30), rec(v, p, tStart.Add(time.Minute), 10))
			}
			waitFor(t, "every vehicle entering the gate", func() bool { return log.count("enter") == n })
			first.stop()
			firstBus.Close() // the process ends

			// While the service is down: the even vehicles leave, the odd ones move inside.
			for i := 0; i < n; i++ {
				v := fmt.Sprintf("v%02d", i)
				p := geo.Destination(base, float64(i*36), 150)
				if i%2 == 0 {
					p = geo.Destination(base, float64(i*36), 2000)
				}
				publish(t, b, v, rec(v, p, tStart.Add(2*time.Minute), 20), rec(v, p, tStart.Add(3*time.Minute), 20))
			}
			second := startInstance(t, clientBus(t, b), st, DefaultConfig())
			waitFor(t, "exits of the leavers", func() bool { return log.count("exit") == n })
			// Anything else would arrive with these; give the pipeline a moment to misbehave.
			publish(t, b, "v01", rec("v01", geo.Destination(base, 36, 140), tStart.Add(4*time.Minute), 5))
			waitFor(t, "v01's last record", func() bool {
				r, err := second.client.ZonesForVehicle(context.Background(), &fleetv1.ZonesForVehicleRequest{VehicleId: "v01"})
				return err == nil && len(r.GetZones()) == 2
			})
			time.Sleep(200 * time.Millisecond)
			exits, enters := log.byVehicle("exit"), log.byVehicle("enter")
			for i := 0; i < n; i++ {
				v := fmt.Sprintf("v%02d", i)
				wantExits := 0
				if i%2 == 0 {
					wantExits = 2 // one from the depot (must stay inside), one from the gate
				}
				if exits[v] != wantExits {
					t.Errorf("%s: got %d exits, want %d", v, exits[v], wantExits)
				}
				if enters[v] != 1 {
					t.Errorf("%s: got %d enters, want 1", v, enters[v])
				}
			}
			r, err := second.client.VehiclesInZone(context.Background(), &fleetv1.VehiclesInZoneRequest{ZoneId: "depot"})
			if err != nil || strings.Join(r.GetVehicleIds(), ",") != "v01,v03,v05,v07,v09" {
				t.Errorf("vehicles in the depot: got %v, %v; want the odd ones", r.GetVehicleIds(), err)
			}
			must := 0
			log.mu.Lock()
			for _, e := range log.evs {
				if e.GetKind() == "exit" && e.GetAttributes()["must_stay_inside"] == "true" {
					must++
				}
			}
			log.mu.Unlock()
			if must != n/2 {
				t.Errorf("got %d must-stay-inside exits, want %d", must, n/2)
			}
		})
	}
}

func TestBadInputIsCountedAndSkipped(t *testing.T) {
	b := openBus(t)
	in := startInstance(t, b, NewMemoryStore(), DefaultConfig())
	createZone(t, in.client, &fleetv1.Zone{ZoneId: "z", Name: "Z", Geojson: squareJSON(base, 300)})
	log := watchEvents(t, b)
	ctx := context.Background()
	// A malformed payload.
	if _, err := b.Publish(ctx, bus.UpSubject("bad1", bus.KindTelemetry), []byte("\xff\xff not protobuf")); err != nil {
		t.Fatal(err)
	}
	// A NaN and an out-of-range position, then a good one inside the zone, same batch.
	nan := rec("bad2", base, tStart, 0)
	nan.Lat = math.NaN()
	far := rec("bad2", base, tStart.Add(time.Second), 0)
	far.Lon = 200
	publish(t, b, "bad2", nan, far, rec("bad2", base, tStart.Add(2*time.Second), 0))
	waitFor(t, "the good record's enter", func() bool { return log.count("enter") == 1 })
	// A record older than the last applied one.
	publish(t, b, "bad2", rec("bad2", geo.Destination(base, 0, 5000), tStart.Add(time.Second), 0))
	for _, reason := range []string{"malformed", "nan_coordinate", "out_of_range", "out_of_order"} {
		waitFor(t, "rejection "+reason, func() bool { return in.s.rej.Count(reason) == 1 })
	}
	if log.count("exit") != 0 {
		t.Errorf("an out-of-order record raised an exit")
	}
}

// TestRebuildFromStreamIsQuiet: with membership in memory, a restarted instance rebuilds
// it from the retained stream and publishes nothing for records a previous run handled.
func TestRebuildFromStreamIsQuiet(t *testing.T) {
	b := openBus(t)
	log := watchEvents(t, b)
	cfg := DefaultConfig()
	cfg.Rebuild = true
	firstBus := clientBus(t, b)
	first := startInstance(t, firstBus, NewMemoryStore(), cfg)
	createZone(t, first.client, &fleetv1.Zone{ZoneId: "depot", Name: "Depot", Geojson: squareJSON(base, 500)})
	publish(t, b, "v1", rec("v1", geo.Destination(base, 0, 3000), tStart, 30), rec("v1", base, tStart.Add(time.Minute), 10))
	waitFor(t, "the enter", func() bool { return log.count("enter") == 1 })
	first.stop()
	firstBus.Close()

	second := startInstance(t, clientBus(t, b), NewMemoryStore(), cfg)
	waitFor(t, "membership rebuilt", func() bool {
		r, err := second.client.VehiclesInZone(context.Background(), &fleetv1.VehiclesInZoneRequest{ZoneId: "depot"})
		return err == nil && len(r.GetVehicleIds()) == 1
	})
	// A new record after the restart raises events as usual.
	publish(t, b, "v1", rec("v1", geo.Destination(base, 0, 3000), tStart.Add(2*time.Minute), 30))
	waitFor(t, "the exit", func() bool { return log.count("exit") == 1 })
	if got := log.count("enter"); got != 1 {
		t.Errorf("got %d enters, want 1 (the rebuild must not publish again)", got)
	}
}

// ListZoneEvents reads the event stream in several fetches (more events than one fetch
// takes) and returns exactly the events asked for, oldest first: by vehicle, by zone,
// within a time window and up to a limit.
func TestListZoneEventsReturnsTheRightEvents(t *testing.T) {
	b := openBus(t)
	in := startInstance(t, b, NewMemoryStore(), DefaultConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var evs []*fleetv1.Event
	for i := range 300 {
		v, zone := "v1", "a"
		if i%30 == 0 {
			v, zone = "v2", "b" // 10 events of v2 in zone b, among v1's 290 in zone a
		}
		evs = append(evs, &fleetv1.Event{
			EventId: fmt.Sprintf("geofence.enter.%s.%s.%d", v, zone, i), Source: Source, Kind: "enter", VehicleId: v,
			Time: timestamppb.New(tStart.Add(time.Duration(i) * time.Second)), Attributes: map[string]string{"zone_id": zone},
		})
	}
	// A tracking event of v1 is not a zone event.
	evs = append(evs, &fleetv1.Event{EventId: "tracking.x", Source: "tracking", Kind: "status_changed", VehicleId: "v1", Time: timestamppb.New(tStart)})
	if err := eventpub.Publish(ctx, b, evs, 0); err != nil {
		t.Fatal(err)
	}
	ordered := func(es []*fleetv1.Event) bool {
		for i := 1; i < len(es); i++ {
			if es[i].GetTime().AsTime().Before(es[i-1].GetTime().AsTime()) {
				return false
			}
		}
		return true
	}
	tests := []struct {
		name          string
		req           *fleetv1.ListZoneEventsRequest
		want          int
		wantTruncated bool
		check         func(*fleetv1.Event) bool
	}{
		{"by vehicle, several fetches", &fleetv1.ListZoneEventsRequest{VehicleId: "v1"}, 290, false,
			func(e *fleetv1.Event) bool { return e.GetVehicleId() == "v1" && e.GetSource() == Source }},
		{"by zone", &fleetv1.ListZoneEventsRequest{ZoneId: "b"}, 10, false,
			func(e *fleetv1.Event) bool { return e.GetAttributes()["zone_id"] == "b" }},
		{"by vehicle and zone", &fleetv1.ListZoneEventsRequest{VehicleId: "v2", ZoneId: "a"}, 0, false, nil},
		{"limit", &fleetv1.ListZoneEventsRequest{ZoneId: "a", Limit: 5}, 5, true,
			func(e *fleetv1.Event) bool { return e.GetAttributes()["zone_id"] == "a" }},
		{"window ending before the first", &fleetv1.ListZoneEventsRequest{VehicleId: "v1", To: timestamppb.New(time.Now().Add(-time.Hour))}, 0, false, nil},
		{"unknown vehicle", &fleetv1.ListZoneEventsRequest{VehicleId: "v9"}, 0, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := in.client.ListZoneEvents(ctx, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.GetEvents()) != tt.want || r.GetTruncated() != tt.wantTruncated {
				t.Fatalf("got %d events (truncated %v), want %d (%v)", len(r.GetEvents()), r.GetTruncated(), tt.want, tt.wantTruncated)
			}
			for _, e := range r.GetEvents() {
				if tt.check != nil && !tt.check(e) {
					t.Errorf("unexpected event %v", e)
				}
			}
			if !ordered(r.GetEvents()) {
				t.Error("events not oldest first")
			}
		})
	}
}

// TestRunReturnsWhenAConsumerCannotStart: Run stops its zone watcher before waiting for
// it. It used to wait first, so an error of Run's own (here a durable that cannot be a
// pull consumer; in the fault-injection run, a consumer not created in time on one
// starved CPU) left the process alive with every consumer stopped, for good.
func TestRunReturnsWhenAConsumerCannotStart(t *testing.T) {
	b := openBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := natstest.JetStream(t, b).CreateOrUpdatePushConsumer(ctx, bus.TelemetryStream, jetstream.ConsumerConfig{
		Durable: Source + "-p00", DeliverSubject: "elsewhere", AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	s, err := New(DefaultConfig(), b, NewMemoryStore(), testLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), Source+"-p00") {
			t.Errorf("Run returned %v, want the consumer's error", err)
		}
	case <-time.After(2 * time.Minute): // a hang, not a speed verdict
		t.Fatal("Run did not return after its consumer failed")
	}
}
