package launch

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// The attacks on the gRPC API from the security review, each against the whole platform
// over TLS: each is refused with a clear status and changes nothing.
func TestGRPCAttacksAreRefused(t *testing.T) {
	p := startPlatform(t, Options{RedisURL: "memory"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := dial(t, p)
	tokens := fleetv1.NewTokenServiceClient(admin)
	token := func(name string, role fleetv1.Role, groups ...string) *grpc.ClientConn {
		t.Helper()
		resp, err := tokens.CreateToken(ctx, &fleetv1.CreateTokenRequest{Name: name, Role: role, Groups: groups})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpcserver.Dial(p.GRPCAddr, grpcserver.ClientConfig{CAFile: p.CAFile, Token: resp.GetSecret()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	viewer := token("vera", fleetv1.Role_ROLE_VIEWER)
	dispatcher := token("dan", fleetv1.Role_ROLE_DISPATCHER)
	red := token("rita", fleetv1.Role_ROLE_VIEWER, "red")
	for id, groups := range map[string][]string{"red-1": {"red"}, "blue-1": {"blue"}} {
		if _, err := fleetv1.NewTrackingServiceClient(admin).RegisterVehicle(ctx, &fleetv1.RegisterVehicleRequest{VehicleId: id, Name: id, Groups: groups}); err != nil {
			t.Fatal(err)
		}
	}
	square := `{"type":"Polygon","coordinates":[[[13.3,52.5],[13.4,52.5],[13.4,52.6],[13.3,52.6],[13.3,52.5]]]}`

	t.Run("anonymous call", func(t *testing.T) {
		conn, err := grpcserver.Dial(p.GRPCAddr, grpcserver.ClientConfig{CAFile: p.CAFile})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = fleetv1.NewCommandServiceClient(conn).SendCommand(ctx, &fleetv1.SendCommandRequest{VehicleId: "red-1", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE})
		if got := status.Code(err); got != codes.Unauthenticated {
			t.Fatalf("got %v (%v), want Unauthenticated", got, err)
		}
		// Health stays open for probes and load balancers.
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("anonymous health check: %v", err)
		}
	})
	t.Run("plaintext client", func(t *testing.T) {
		conn, err := grpcserver.Dial(p.GRPCAddr, grpcserver.ClientConfig{Plaintext: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = fleetv1.NewTrackingServiceClient(conn).ListVehicles(ctx, &fleetv1.ListVehiclesRequest{})
		if got := status.Code(err); got != codes.Unavailable {
			t.Fatalf("got %v (%v), want Unavailable (no plaintext listener)", got, err)
		}
	})
	t.Run("viewer sends IMMOBILIZE", func(t *testing.T) {
		_, err := fleetv1.NewCommandServiceClient(viewer).SendCommand(ctx, &fleetv1.SendCommandRequest{VehicleId: "red-1", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE, Who: "supervisor"})
		if got := status.Code(err); got != codes.PermissionDenied {
			t.Fatalf("got %v (%v), want PermissionDenied", got, err)
		}
		resp, err := fleetv1.NewCommandServiceClient(admin).ListCommands(ctx, &fleetv1.ListCommandsRequest{VehicleId: "red-1"})
		if err != nil || len(resp.GetCommands()) != 0 {
			t.Fatalf("commands for red-1 after the refusal: %v, %v; want none", resp.GetCommands(), err)
		}
	})
	t.Run("dispatcher sends IMMOBILIZE", func(t *testing.T) {
		_, err := fleetv1.NewCommandServiceClient(dispatcher).SendCommand(ctx, &fleetv1.SendCommandRequest{VehicleId: "red-1", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE})
		if got := status.Code(err); got != codes.PermissionDenied {
			t.Fatalf("got %v (%v), want PermissionDenied (a supervisor's call)", got, err)
		}
	})
	t.Run("dispatcher cancels a queued IMMOBILIZE", func(t *testing.T) {
		// red-1 is registered and has never reported: the command waits in the queue.
		sent, err := fleetv1.NewCommandServiceClient(admin).SendCommand(ctx, &fleetv1.SendCommandRequest{VehicleId: "red-1", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE})
		if err != nil {
			t.Fatal(err)
		}
		id := sent.GetCommand().GetCommandId()
		_, err = fleetv1.NewCommandServiceClient(dispatcher).CancelCommand(ctx, &fleetv1.CancelCommandRequest{CommandId: id})
		if got := status.Code(err); got != codes.PermissionDenied {
			t.Fatalf("got %v (%v), want PermissionDenied (withdrawing an engine cut is a supervisor's call)", got, err)
		}
		got, err := fleetv1.NewCommandServiceClient(admin).CancelCommand(ctx, &fleetv1.CancelCommandRequest{CommandId: id, Note: "wrong vehicle"})
		if err != nil || got.GetCommand().GetState() != fleetv1.CommandState_COMMAND_STATE_CANCELLED {
			t.Fatalf("admin cancel: got %v, %v; want cancelled", got.GetCommand(), err)
		}
		// A mistyped vehicle id is refused, not queued for a day.
		_, err = fleetv1.NewCommandServiceClient(dispatcher).SendCommand(ctx, &fleetv1.SendCommandRequest{VehicleId: "red-l", Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW})
		if got := status.Code(err); got != codes.NotFound {
			t.Fatalf("command to an unknown vehicle: got %v (%v), want NotFound", got, err)
		}
	})
	t.Run("dispatcher creates a zone", func(t *testing.T) {
		_, err := fleetv1.NewGeofenceServiceClient(dispatcher).CreateZone(ctx, &fleetv1.CreateZoneRequest{Zone: &fleetv1.Zone{ZoneId: "sneaky", Name: "Sneaky", Geojson: square}})
		if got := status.Code(err); got != codes.PermissionDenied {
			t.Fatalf("got %v (%v), want PermissionDenied", got, err)
		}
		_, err = fleetv1.NewGeofenceServiceClient(admin).GetZone(ctx, &fleetv1.GetZoneRequest{ZoneId: "sneaky"})
		if got := status.Code(err); got != codes.NotFound {
			t.Fatalf("zone after the refusal: got %v (%v), want NotFound", got, err)
		}
	})
	t.Run("group-scoped principal reads another group's vehicle", func(t *testing.T) {
		c := fleetv1.NewTrackingServiceClient(red)
		if _, err := c.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "red-1"}); err != nil {
			t.Fatalf("own group's vehicle: %v", err)
		}
		_, err := c.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "blue-1"})
		if got := status.Code(err); got != codes.NotFound {
			t.Fatalf("other group's vehicle: got %v (%v), want NotFound", got, err)
		}
		resp, err := c.ListVehicles(ctx, &fleetv1.ListVehiclesRequest{PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, v := range resp.GetVehicles() {
			ids = append(ids, v.GetVehicleId())
		}
		if !slices.Equal(ids, []string{"red-1"}) {
			t.Fatalf("listed %v, want [red-1]", ids)
		}
		_, err = fleetv1.NewMaintenanceServiceClient(red).GetVehicleHealth(ctx, &fleetv1.GetVehicleHealthRequest{VehicleId: "blue-1"})
		if got := status.Code(err); got != codes.NotFound {
			t.Fatalf("other group's vehicle health: got %v (%v), want NotFound", got, err)
		}
		// A watch of the whole fleet never shows blue-1.
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		w, err := c.WatchVehicles(wctx, &fleetv1.WatchVehiclesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fleetv1.NewTrackingServiceClient(admin).UpdateVehicle(ctx, &fleetv1.UpdateVehicleRequest{VehicleId: "blue-1", Name: "renamed", UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := fleetv1.NewTrackingServiceClient(admin).UpdateVehicle(ctx, &fleetv1.UpdateVehicleRequest{VehicleId: "red-1", Name: "renamed", UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}}); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := w.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if id := m.GetVehicle().GetVehicleId(); id == "blue-1" {
				t.Fatal("the watch showed blue-1 to a principal limited to red")
			} else if id == "red-1" && m.GetVehicle().GetName() == "renamed" {
				break // the red update came after the blue one, and blue never showed
			}
		}
	})
	t.Run("oversized GeoJSON", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			bytes int
			want  codes.Code
		}{
			{"4 MB, over the message limit", 4 << 20, codes.ResourceExhausted},
			{"100 KB, over the zone limit", 100 << 10, codes.InvalidArgument},
		} {
			geo := `{"type":"Polygon","coordinates":[[` + strings.Repeat("[13.3,52.5],", tc.bytes/12) + `[13.3,52.5]]]}`
			_, err := fleetv1.NewGeofenceServiceClient(admin).CreateZone(ctx, &fleetv1.CreateZoneRequest{Zone: &fleetv1.Zone{ZoneId: "huge", Name: "Huge", Geojson: geo}})
			if got := status.Code(err); got != tc.want {
				t.Errorf("%s: got %v (%v), want %v", tc.name, got, err, tc.want)
			}
		}
	})
	t.Run("audit record carries the authenticated principal", func(t *testing.T) {
		resp, err := fleetv1.NewAuditServiceClient(admin).ListAuditRecords(ctx, &fleetv1.ListAuditRecordsRequest{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var sawRegister, sawDenied, sawCancel, sawCancelDenied bool
		for _, r := range resp.GetRecords() {
			if r.GetPeer() == "" || r.GetTime() == nil {
				t.Errorf("record without peer or time: %v", r)
			}
			switch {
			case r.GetMethod() == "/fleet.v1.TrackingService/RegisterVehicle" && r.GetPrincipal() == "admin" && r.GetCode() == "OK":
				sawRegister = true
			case r.GetMethod() == "/fleet.v1.CommandService/CancelCommand" && r.GetPrincipal() == "admin" && r.GetCode() == "OK":
				sawCancel = true
			case r.GetMethod() == "/fleet.v1.CommandService/CancelCommand" && r.GetPrincipal() == "dan" && r.GetCode() == "PermissionDenied":
				sawCancelDenied = true
			case r.GetMethod() == "/fleet.v1.CommandService/SendCommand" && r.GetPrincipal() == "vera" && r.GetCode() == "PermissionDenied":
				sawDenied = true
				if strings.Contains(r.GetRequest(), `"who":"supervisor"`) {
					t.Errorf("the record keeps the caller's claimed who: %s", r.GetRequest())
				}
			}
		}
		if !sawRegister || !sawDenied || !sawCancel || !sawCancelDenied {
			t.Fatalf("audit trail has the admin's registration: %v, vera's refused IMMOBILIZE: %v, the admin's cancel: %v, dan's refused cancel: %v; want all (%d records)",
				sawRegister, sawDenied, sawCancel, sawCancelDenied, len(resp.GetRecords()))
		}
		_, err = fleetv1.NewAuditServiceClient(viewer).ListAuditRecords(ctx, &fleetv1.ListAuditRecordsRequest{})
		if got := status.Code(err); got != codes.PermissionDenied {
			t.Fatalf("viewer reading the audit trail: got %v, want PermissionDenied", got)
		}
	})
}

// Security off is a choice the process states: plaintext works, and every caller is an
// anonymous admin.
func TestInsecureModeServesPlaintext(t *testing.T) {
	p := startPlatform(t, Options{RedisURL: "memory", Services: []string{Tracking}, Security: Security{Insecure: true}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !p.Insecure || p.AdminToken != "" {
		t.Fatalf("platform Insecure=%v AdminToken=%q, want insecure without a token", p.Insecure, p.AdminToken)
	}
	if _, err := fleetv1.NewTrackingServiceClient(dial(t, p)).ListVehicles(ctx, &fleetv1.ListVehiclesRequest{}); err != nil {
		t.Fatalf("plaintext call with security off: %v", err)
	}
}
