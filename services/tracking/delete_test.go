package tracking

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// TestDeleteVehicle: a deleted vehicle leaves the registry, the group directory every
// service reads, the lists and its history at once; its id registered again starts clean.
func TestDeleteVehicle(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testDeleteVehicle(t, NewMemoryStore()) })
	t.Run("redis", func(t *testing.T) {
		c := redistest.Client(t)
		testDeleteVehicle(t, NewRedisStore(c, redistest.Prefix(t, c)))
	})
}

func testDeleteVehicle(t *testing.T, st Store) {
	b := testBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	groups, err := auth.OpenGroups(ctx, b, 1, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(DefaultConfig(), b, st, discardLog(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	svc.PublishGroupsTo(groups)
	runDone := make(chan error, 1)
	go func() { runDone <- svc.Run(ctx) }()
	defer func() { cancel(); <-runDone }()
	gs := grpcserver.New(discardLog(), nil)
	svc.Register(gs.GRPC)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ctx, time.Second)
	conn, err := grpc.NewClient(gs.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := fleetv1.NewTrackingServiceClient(conn)

	if _, err := client.RegisterVehicle(ctx, &fleetv1.RegisterVehicleRequest{VehicleId: "d-1", Name: "Van", Groups: []string{"vans"}}); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Hour)
	publishRecords(t, b, "d-1", liveRec("d-1", 1, base, 0), liveRec("d-1", 2, base, 100), liveRec("d-1", 3, base, 200))
	publishRecords(t, b, "keep-1", liveRec("keep-1", 1, base, 0))
	trackOf := func(id string) int {
		resp, err := client.GetTrack(ctx, &fleetv1.GetTrackRequest{VehicleId: id, StartTime: timestamppb.New(base.Add(-time.Hour)), EndTime: timestamppb.New(time.Now())})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetFixes())
	}
	waitFor(t, "the track stored", func() bool { return trackOf("d-1") == 3 && storedState(t, st, "keep-1") != nil })
	if !groups.Known("d-1") {
		t.Fatal("the registered vehicle is not in the group directory")
	}

	del, err := client.DeleteVehicle(ctx, &fleetv1.DeleteVehicleRequest{VehicleId: "d-1"})
	if err != nil || del.GetVehicle().GetName() != "Van" {
		t.Fatalf("DeleteVehicle: %v, %v; want the vehicle as it was", del, err)
	}
	if _, err := client.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "d-1"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetVehicle after delete: %v, want NotFound", err)
	}
	if groups.Known("d-1") {
		t.Fatal("the deleted vehicle is still in the group directory")
	}
	list, err := client.ListVehicles(ctx, &fleetv1.ListVehiclesRequest{})
	if err != nil || len(list.GetVehicles()) != 1 || list.GetVehicles()[0].GetVehicleId() != "keep-1" || list.GetTotalSize() != 1 {
		t.Fatalf("ListVehicles after delete: %v, %v; want keep-1 alone", list.GetVehicles(), err)
	}
	if _, err := client.DeleteVehicle(ctx, &fleetv1.DeleteVehicleRequest{VehicleId: "d-1"}); status.Code(err) != codes.NotFound {
		t.Fatalf("second delete: %v, want NotFound", err)
	}
	// Registered again, the id starts clean: the old history is gone.
	if _, err := client.RegisterVehicle(ctx, &fleetv1.RegisterVehicleRequest{VehicleId: "d-1"}); err != nil {
		t.Fatal(err)
	}
	if n := trackOf("d-1"); n != 0 {
		t.Fatalf("the id registered again has %d fixes of the deleted vehicle", n)
	}
	if n := trackOf("keep-1"); n != 1 {
		t.Fatalf("another vehicle's track: %d fixes, want 1", n)
	}
}
