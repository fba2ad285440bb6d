package launch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// Device provisioning over the platform's gRPC API, with TLS and API tokens: only an
// admin provisions, the audit trail names the authenticated principal and never holds a
// secret, and revocation and rotation change what the registry (the NATS login check)
// accepts.
func TestDeviceProvisioningOverTLS(t *testing.T) {
	p := startPlatform(t, Options{RedisURL: "memory", Services: []string{Devices}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if p.DeviceRegistry == nil {
		t.Fatal("the platform runs the devices service but exposes no registry")
	}
	tokens := fleetv1.NewTokenServiceClient(dial(t, p))
	as := func(name string, role fleetv1.Role) fleetv1.DeviceServiceClient {
		t.Helper()
		resp, err := tokens.CreateToken(ctx, &fleetv1.CreateTokenRequest{Name: name, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpcserver.Dial(p.GRPCAddr, grpcserver.ClientConfig{CAFile: p.CAFile, Token: resp.GetSecret()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return fleetv1.NewDeviceServiceClient(conn)
	}
	viewer, dispatcher, supervisor := as("vera", fleetv1.Role_ROLE_VIEWER), as("dan", fleetv1.Role_ROLE_DISPATCHER), as("sue", fleetv1.Role_ROLE_SUPERVISOR)
	admin := as("ada", fleetv1.Role_ROLE_ADMIN)

	// A devices-only process consumes no stream: it is ready at once.
	conn, err := p.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitServing(ctx, t, conn)

	t.Run("only an admin provisions", func(t *testing.T) {
		for name, c := range map[string]fleetv1.DeviceServiceClient{"viewer": viewer, "dispatcher": dispatcher, "supervisor": supervisor} {
			_, err := c.AddDevice(ctx, &fleetv1.AddDeviceRequest{DeviceId: "sneaky-" + name})
			if got := status.Code(err); got != codes.PermissionDenied {
				t.Errorf("%s AddDevice: got %v (%v), want PermissionDenied", name, got, err)
			}
			_, err = c.ListDevices(ctx, &fleetv1.ListDevicesRequest{})
			if got := status.Code(err); got != codes.PermissionDenied {
				t.Errorf("%s ListDevices: got %v (%v), want PermissionDenied", name, got, err)
			}
		}
		resp, err := admin.ListDevices(ctx, &fleetv1.ListDevicesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(resp.GetDevices()); n != 0 {
			t.Fatalf("%d devices after the refusals, want none: %v", n, resp.GetDevices())
		}
	})

	added, err := admin.AddDevice(ctx, &fleetv1.AddDeviceRequest{DeviceId: "veh-7", Model: "fmc130", Protocol: "nats"})
	if err != nil {
		t.Fatalf("admin AddDevice: %v", err)
	}
	first := added.GetCredential().GetPassword()
	if added.GetDevice().GetChangedBy() != "ada" || added.GetCredential().GetUser() != "veh-7" || first == "" {
		t.Fatalf("added %v with credential user %q: want changed by ada, user veh-7, a password", added.GetDevice(), added.GetCredential().GetUser())
	}
	if got, want := added.GetCredential().GetNatsUrl(), p.Bus.ClientURL(); got != want {
		t.Errorf("credential NATS URL %q, want the platform's %q", got, want)
	}
	if _, err := p.DeviceRegistry.Verify(ctx, "veh-7", first); err != nil {
		t.Fatalf("the issued password does not log in: %v", err)
	}

	rotated, err := admin.RotateDevice(ctx, &fleetv1.RotateDeviceRequest{DeviceId: "veh-7"})
	if err != nil {
		t.Fatal(err)
	}
	second := rotated.GetCredential().GetPassword()
	t.Run("rotate invalidates the old secret", func(t *testing.T) {
		if _, err := p.DeviceRegistry.Verify(ctx, "veh-7", first); !errors.Is(err, natsauth.ErrBadSecret) {
			t.Fatalf("old password after rotation: %v, want ErrBadSecret", err)
		}
		if _, err := p.DeviceRegistry.Verify(ctx, "veh-7", second); err != nil {
			t.Fatalf("new password: %v", err)
		}
	})

	t.Run("revoke, then the device cannot log in", func(t *testing.T) {
		if _, err := admin.RevokeDevice(ctx, &fleetv1.RevokeDeviceRequest{DeviceId: "veh-7"}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.DeviceRegistry.Verify(ctx, "veh-7", second); !errors.Is(err, natsauth.ErrDeviceRevoked) {
			t.Fatalf("revoked device's password: %v, want ErrDeviceRevoked", err)
		}
		got, err := admin.GetDevice(ctx, &fleetv1.GetDeviceRequest{DeviceId: "veh-7"})
		if err != nil || got.GetDevice().GetState() != fleetv1.DeviceState_DEVICE_STATE_REVOKED {
			t.Fatalf("GetDevice after revoke: %v, %v", got, err)
		}
	})

	t.Run("audit names the principal and never holds a secret", func(t *testing.T) {
		resp, err := fleetv1.NewAuditServiceClient(conn).ListAuditRecords(ctx, &fleetv1.ListAuditRecordsRequest{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var ok []string
		for _, r := range resp.GetRecords() {
			for _, secret := range []string{first, second} {
				if strings.Contains(r.GetRequest(), secret) || strings.Contains(r.GetError(), secret) {
					t.Errorf("audit record %d holds a device secret: %v", r.GetSeq(), r)
				}
			}
			if !strings.HasPrefix(r.GetMethod(), "/fleet.v1.DeviceService/") {
				continue
			}
			if r.GetCode() == "OK" {
				if r.GetPrincipal() != "ada" || !strings.Contains(r.GetRequest(), "veh-7") {
					t.Errorf("record %v: want principal ada and the device id in the request", r)
				}
				ok = append(ok, strings.TrimPrefix(r.GetMethod(), "/fleet.v1.DeviceService/"))
			} else if r.GetMethod() == "/fleet.v1.DeviceService/AddDevice" && r.GetCode() != "PermissionDenied" {
				t.Errorf("refused AddDevice recorded as %s, want PermissionDenied", r.GetCode())
			}
		}
		if want := []string{"AddDevice", "RotateDevice", "RevokeDevice"}; !slices.Equal(ok, want) {
			t.Fatalf("audited device changes %v, want %v (reads are not audited)", ok, want)
		}
	})
}

// waitServing waits until the process's health check reports SERVING.
func waitServing(ctx context.Context, t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	h := healthpb.NewHealthClient(conn)
	for {
		resp, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("never SERVING: %v, %v", resp.GetStatus(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// The all-in-one as cmd/fleetwire starts it (every service, the Teltonika gateway and the
// devices service) earns SERVING: components that consume no stream add no consumer for
// readiness to wait on.
func TestAllInOneWithStreamlessComponentsBecomesReady(t *testing.T) {
	p := startPlatform(t, Options{RedisURL: "memory",
		Services:  append(append([]string(nil), AllServices...), Teltonika),
		Teltonika: TeltonikaOptions{TCPAddr: "127.0.0.1:0", UDPAddr: "127.0.0.1:0"},
	})
	if !slices.Contains(AllServices, Devices) || p.DeviceRegistry == nil {
		t.Fatalf("the all-in-one runs without the devices service (AllServices %v)", AllServices)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitServing(ctx, t, dial(t, p))
}
