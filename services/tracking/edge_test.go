package tracking

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

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
	serve := func(st Store) fleetv1.TrackingServiceClient {
		s, err := New(DefaultConfig(), b, st, discardLog(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return fleetv1.NewTrackingServiceClient(grpctest.Serve(t, s.Register))
	}
	mem := serve(NewMemoryStore())
	down := serve(NewRedisStore(redistest.Unreachable(t), "fw:"))
	tests := []struct {
		name string
		call func(ctx context.Context) error
		want codes.Code
	}{
		{"not found", func(ctx context.Context) error {
			_, err := mem.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "nobody"})
			return err
		}, codes.NotFound},
		{"invalid argument", func(ctx context.Context) error {
			_, err := mem.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "bad id with spaces"})
			return err
		}, codes.InvalidArgument},
		{"unavailable without driver text", func(ctx context.Context) error {
			_, err := down.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "v1"})
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
// no or a wrong credential is Unauthenticated, a viewer changing the registry is
// PermissionDenied, and a caller let through reaches the service's own answer.
func TestEdgeAuthOverTLS(t *testing.T) {
	b := natstest.Bus(t)
	s, err := New(DefaultConfig(), b, NewMemoryStore(), discardLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	read := func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := fleetv1.NewTrackingServiceClient(conn).GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "nobody"})
		return err
	}
	change := func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := fleetv1.NewTrackingServiceClient(conn).DeleteVehicle(ctx, &fleetv1.DeleteVehicleRequest{VehicleId: "nobody"})
		return err
	}
	export := func(ctx context.Context, conn *grpc.ClientConn) error {
		now := time.Now()
		stream, err := fleetv1.NewTrackingServiceClient(conn).ExportTrack(ctx, &fleetv1.ExportTrackRequest{VehicleId: "nobody",
			StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now), Format: fleetv1.ExportFormat_EXPORT_FORMAT_GPX})
		if err != nil {
			return err
		}
		for {
			if _, err := stream.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	grpctest.ServeSecure(t, b, s.Register).CheckAuth(t, read, []grpctest.AuthCase{
		{Name: "viewer reads", Role: auth.Viewer, Call: read, Want: codes.NotFound},
		{Name: "viewer exports a track", Role: auth.Viewer, Call: export, Want: codes.OK},
		{Name: "viewer changes the registry", Role: auth.Viewer, Call: change, Want: codes.PermissionDenied},
		{Name: "admin changes the registry", Role: auth.Admin, Call: change, Want: codes.NotFound},
	})
}
