package tracking

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// TestLoadTestVehiclesIsolated: vehicles under the reserved load-test prefix are left
// out of the live fleet (lists, totals, nearest, the default watch), are watched only on
// request, and are removed, not reported offline, once they stop reporting.
func TestLoadTestVehiclesIsolated(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testLoadTestVehiclesIsolated(t, NewMemoryStore()) })
	t.Run("redis", func(t *testing.T) {
		c := redistest.Client(t)
		testLoadTestVehiclesIsolated(t, NewRedisStore(c, redistest.Prefix(t, c)))
	})
}

func testLoadTestVehiclesIsolated(t *testing.T, st Store) {
	b := testBus(t)
	cfg := DefaultConfig()
	cfg.OfflineAfter = 2 * time.Second
	cfg.SweepInterval = 100 * time.Millisecond
	offline := make(chan string, 16)
	sub, err := b.Conn().Subscribe(bus.EventSourceFilter("tracking"), func(m *nats.Msg) {
		var e fleetv1.Event
		if proto.Unmarshal(m.Data, &e) == nil && e.GetAttributes()["status"] == "offline" {
			offline <- e.GetVehicleId()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	svc := startService(t, cfg, b, st, discardLog())
	gs := grpcserver.New(discardLog(), nil)
	svc.Register(gs.GRPC)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go gs.Serve(ctx, time.Second)
	conn, err := grpc.NewClient(gs.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := fleetv1.NewTrackingServiceClient(conn)
	live, err := client.WatchVehicles(ctx, &fleetv1.WatchVehiclesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	lt, err := client.WatchVehicles(ctx, &fleetv1.WatchVehiclesRequest{LoadTest: true})
	if err != nil {
		t.Fatal(err)
	}
	const test = telemetry.LoadTestPrefix + "x-00001"
	base := time.Now().Add(-time.Minute)
	publishRecords(t, b, test, liveRec(test, 1, base, 0))
	publishRecords(t, b, "real-1", liveRec("real-1", 1, base, 0))
	waitFor(t, "both stored", func() bool { return storedState(t, st, test) != nil && storedState(t, st, "real-1") != nil })

	first := func(s grpc.ServerStreamingClient[fleetv1.WatchVehiclesResponse]) string {
		m, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return m.GetVehicle().GetVehicleId()
	}
	if got := first(live); got != "real-1" {
		t.Errorf("the live watch showed %s, want real-1 only", got)
	}
	if got := first(lt); got != test {
		t.Errorf("the load-test watch showed %s, want %s only", got, test)
	}
	list, err := client.ListVehicles(ctx, &fleetv1.ListVehiclesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetVehicles()) != 1 || list.GetVehicles()[0].GetVehicleId() != "real-1" || list.GetTotalSize() != 1 {
		t.Fatalf("ListVehicles: got %v total %d, want real-1 alone", list.GetVehicles(), list.GetTotalSize())
	}
	near, err := client.SearchNearestVehicles(ctx, &fleetv1.SearchNearestVehiclesRequest{
		Point: &fleetv1.LatLng{Latitude: east0(0)[0], Longitude: east0(0)[1]}, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range near.GetVehicles() {
		if telemetry.IsLoadTest(n.GetVehicle().GetVehicleId()) {
			t.Fatalf("nearest search found load-test vehicle %s", n.GetVehicle().GetVehicleId())
		}
	}
	// Both stop reporting: the live vehicle goes offline, the load-test one is removed.
	select {
	case v := <-offline:
		if v != "real-1" {
			t.Fatalf("offline event for %s, want real-1 only", v)
		}
	case <-ctx.Done():
		t.Fatal("no offline event for real-1")
	}
	waitFor(t, "the load-test vehicle removed", func() bool {
		_, err := client.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: test})
		return status.Code(err) == codes.NotFound
	})
	if s := storedState(t, st, test); s != nil {
		t.Fatalf("load-test vehicle still stored: %+v", s)
	}
	time.Sleep(4 * cfg.SweepInterval)
	select {
	case v := <-offline:
		t.Fatalf("offline event for %s after the removal", v)
	default:
	}
}
