package maintenance

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/grpctest"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// The edge's error table over real gRPC: bad input is InvalidArgument, a missing thing
// NotFound, a Redis outage Unavailable, and the driver's text (host, port, syscall) never
// reaches the client.
func TestEdgeErrors(t *testing.T) {
	b := natstest.Bus(t)
	serve := func(st Store) fleetv1.MaintenanceServiceClient {
		s, err := New(DefaultConfig(), b, st, testLogger(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return fleetv1.NewMaintenanceServiceClient(grpctest.Serve(t, s.Register))
	}
	mem := serve(NewMemoryStore())
	down := serve(NewRedisStore(redistest.Unreachable(t), "fw:"))
	tests := []struct {
		name string
		call func(ctx context.Context) error
		want codes.Code
	}{
		{"not found", func(ctx context.Context) error {
			_, err := mem.DeletePlan(ctx, &fleetv1.DeletePlanRequest{PlanId: "nothing"})
			return err
		}, codes.NotFound},
		{"invalid argument", func(ctx context.Context) error {
			_, err := mem.GetVehicleHealth(ctx, &fleetv1.GetVehicleHealthRequest{VehicleId: "bad id with spaces"})
			return err
		}, codes.InvalidArgument},
		{"unavailable without driver text", func(ctx context.Context) error {
			_, err := down.GetVehicleHealth(ctx, &fleetv1.GetVehicleHealthRequest{VehicleId: "v1"})
			return err
		}, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := tt.call(ctx)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("got %v (%v), want %v", got, err, tt.want)
			}
			msg := status.Convert(err).Message()
			for _, leak := range []string{redistest.UnreachableAddr, "connection refused", "dial tcp"} {
				if strings.Contains(msg, leak) {
					t.Errorf("client sees %q, which contains the driver's %q", msg, leak)
				}
			}
		})
	}
}

// The edge as the binaries serve it, over TLS with bearer tokens and pkg/auth's guard:
// no or a wrong credential is Unauthenticated, a viewer changing plans is
// PermissionDenied, and a caller let through reaches the service's own answer.
func TestEdgeAuthOverTLS(t *testing.T) {
	b := natstest.Bus(t)
	s, err := New(DefaultConfig(), b, NewMemoryStore(), testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	read := func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := fleetv1.NewMaintenanceServiceClient(conn).ListPlans(ctx, &fleetv1.ListPlansRequest{})
		return err
	}
	change := func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := fleetv1.NewMaintenanceServiceClient(conn).DeletePlan(ctx, &fleetv1.DeletePlanRequest{PlanId: "nothing"})
		return err
	}
	grpctest.ServeSecure(t, b, s.Register).CheckAuth(t, read, []grpctest.AuthCase{
		{Name: "viewer reads", Role: auth.Viewer, Call: read, Want: codes.OK},
		{Name: "viewer changes plans", Role: auth.Viewer, Call: change, Want: codes.PermissionDenied},
		{Name: "admin changes plans", Role: auth.Admin, Call: change, Want: codes.NotFound},
	})
}
