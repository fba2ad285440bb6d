package devices

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/grpctest"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func testLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// serve runs the service over the real registry on b's NATS server, behind real gRPC.
func serve(t *testing.T, b *bus.Bus, cfg Config) (fleetv1.DeviceServiceClient, *natsauth.Devices) {
	t.Helper()
	c, reg, _ := serveCounted(t, b, cfg)
	return c, reg
}

// serveCounted is serve that also returns the service, whose metrics a test reads.
func serveCounted(t *testing.T, b *bus.Bus, cfg Config) (fleetv1.DeviceServiceClient, *natsauth.Devices, *Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg, err := natsauth.OpenDevices(ctx, b, 1, testLog())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, reg, testLog(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return fleetv1.NewDeviceServiceClient(grpctest.Serve(t, s.Register)), reg, s
}

// The edge's error table over real gRPC: a bad id or page token is InvalidArgument, an
// unknown device NotFound, a taken id AlreadyExists, a registry outage Unavailable, and
// the driver's text (NATS's errors, the server's address) never reaches the client.
func TestEdgeErrors(t *testing.T) {
	b := natstest.Bus(t)
	c, _ := serve(t, b, Config{})
	// A second connection whose registry loses NATS: its writes fail like an outage.
	lost := natstest.Client(t, b)
	down, _ := serve(t, lost, Config{})
	lost.Close()

	ctx := testCtx(t)
	if _, err := c.AddDevice(ctx, &fleetv1.AddDeviceRequest{DeviceId: "veh-1"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func(ctx context.Context) error
		want codes.Code
	}{
		{"not found", func(ctx context.Context) error {
			_, err := c.GetDevice(ctx, &fleetv1.GetDeviceRequest{DeviceId: "nowhere"})
			return err
		}, codes.NotFound},
		{"revoke unknown", func(ctx context.Context) error {
			_, err := c.RevokeDevice(ctx, &fleetv1.RevokeDeviceRequest{DeviceId: "nowhere"})
			return err
		}, codes.NotFound},
		{"rotate unknown", func(ctx context.Context) error {
			_, err := c.RotateDevice(ctx, &fleetv1.RotateDeviceRequest{DeviceId: "nowhere"})
			return err
		}, codes.NotFound},
		{"id with a subject wildcard", func(ctx context.Context) error {
			_, err := c.AddDevice(ctx, &fleetv1.AddDeviceRequest{DeviceId: "veh.*"})
			return err
		}, codes.InvalidArgument},
		{"empty id", func(ctx context.Context) error {
			_, err := c.GetDevice(ctx, &fleetv1.GetDeviceRequest{})
			return err
		}, codes.InvalidArgument},
		{"model with a control character", func(ctx context.Context) error {
			_, err := c.AddDevice(ctx, &fleetv1.AddDeviceRequest{DeviceId: "veh-2", Model: "fmb\n920"})
			return err
		}, codes.InvalidArgument},
		{"page token that is no id", func(ctx context.Context) error {
			_, err := c.ListDevices(ctx, &fleetv1.ListDevicesRequest{PageToken: "not a token"})
			return err
		}, codes.InvalidArgument},
		{"id taken", func(ctx context.Context) error {
			_, err := c.AddDevice(ctx, &fleetv1.AddDeviceRequest{DeviceId: "veh-1"})
			return err
		}, codes.AlreadyExists},
		{"unavailable without driver text", func(ctx context.Context) error {
			_, err := down.AddDevice(ctx, &fleetv1.AddDeviceRequest{DeviceId: "veh-3"})
			return err
		}, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(testCtx(t))
			if got := status.Code(err); got != tt.want {
				t.Fatalf("got %v (%v), want %v", got, err, tt.want)
			}
			msg := status.Convert(err).Message()
			for _, leak := range []string{"nats:", "connection closed", strings.TrimPrefix(b.ClientURL(), "nats://")} {
				if strings.Contains(msg, leak) {
					t.Errorf("client sees %q, which contains the driver's %q", msg, leak)
				}
			}
		})
	}
	// Nothing the refusals asked for was stored.
	resp, err := c.ListDevices(ctx, &fleetv1.ListDevicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetDevices()); n != 1 {
		t.Fatalf("%d devices after the refusals, want only veh-1: %v", n, resp.GetDevices())
	}
}

// The lifecycle through the edge: the credential comes once with the URL and user a
// device needs, lists page in id order, revoke and rotate change what Verify accepts.
func TestDeviceLifecycle(t *testing.T) {
	b := natstest.Bus(t)
	c, reg, svc := serveCounted(t, b, Config{DeviceNATSURL: "nats://fleet.example:4222"})
	ctx := testCtx(t)

	added, err := c.AddDevice(ctx, &fleetv1.AddDeviceRequest{DeviceId: "veh-b", Model: "fmc130", Protocol: "nats"})
	if err != nil {
		t.Fatal(err)
	}
	cred := added.GetCredential()
	if cred.GetNatsUrl() != "nats://fleet.example:4222" || cred.GetUser() != "veh-b" || cred.GetPassword() == "" {
		t.Fatalf("credential %v: want the configured URL, user veh-b and a password", cred)
	}
	d := added.GetDevice()
	if d.GetState() != fleetv1.DeviceState_DEVICE_STATE_ACTIVE || d.GetModel() != "fmc130" || d.GetCreatedAt() == nil || d.GetRevokedAt() != nil {
		t.Fatalf("added device %v", d)
	}
	if _, err := reg.Verify(ctx, "veh-b", cred.GetPassword()); err != nil {
		t.Fatalf("the issued password does not verify: %v", err)
	}

	// Pages of two, in id order, until the token runs out.
	for _, id := range []string{"veh-a", "veh-c", "veh-d", "veh-e"} {
		if _, err := c.AddDevice(ctx, &fleetv1.AddDeviceRequest{DeviceId: id}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	req := &fleetv1.ListDevicesRequest{PageSize: 2}
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatalf("still paging after %d pages: %v", pages, ids)
		}
		resp, err := c.ListDevices(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetDevices()) > 2 {
			t.Fatalf("page of %d, want at most 2", len(resp.GetDevices()))
		}
		for _, d := range resp.GetDevices() {
			ids = append(ids, d.GetDeviceId())
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if got, want := strings.Join(ids, ","), "veh-a,veh-b,veh-c,veh-d,veh-e"; got != want {
		t.Fatalf("listed %s, want %s", got, want)
	}

	rot, err := c.RotateDevice(ctx, &fleetv1.RotateDeviceRequest{DeviceId: "veh-b"})
	if err != nil {
		t.Fatal(err)
	}
	if p := rot.GetCredential().GetPassword(); p == "" || p == cred.GetPassword() {
		t.Fatalf("rotation returned password %q, want a new one", p)
	}
	if _, err := reg.Verify(ctx, "veh-b", cred.GetPassword()); err == nil {
		t.Fatal("the old password still verifies after rotation")
	}
	if _, err := reg.Verify(ctx, "veh-b", rot.GetCredential().GetPassword()); err != nil {
		t.Fatalf("the rotated password does not verify: %v", err)
	}

	rev, err := c.RevokeDevice(ctx, &fleetv1.RevokeDeviceRequest{DeviceId: "veh-b"})
	if err != nil {
		t.Fatal(err)
	}
	if rev.GetDevice().GetState() != fleetv1.DeviceState_DEVICE_STATE_REVOKED || rev.GetDevice().GetRevokedAt() == nil {
		t.Fatalf("revoked device %v", rev.GetDevice())
	}
	if _, err := reg.Verify(ctx, "veh-b", rot.GetCredential().GetPassword()); err == nil {
		t.Fatal("a revoked device still verifies")
	}
	got, err := c.GetDevice(ctx, &fleetv1.GetDeviceRequest{DeviceId: "veh-b"})
	if err != nil || got.GetDevice().GetState() != fleetv1.DeviceState_DEVICE_STATE_REVOKED {
		t.Fatalf("GetDevice after revoke: %v, %v", got, err)
	}

	// Every change is counted, refusals apart.
	if _, err := c.AddDevice(ctx, &fleetv1.AddDeviceRequest{DeviceId: "veh-b"}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("re-adding veh-b: %v, want AlreadyExists", err)
	}
	for _, tc := range []struct {
		op, result string
		want       float64
	}{{"add", "ok", 5}, {"add", "refused", 1}, {"rotate", "ok", 1}, {"revoke", "ok", 1}} {
		if got := testutil.ToFloat64(svc.changes.WithLabelValues(tc.op, tc.result)); got != tc.want {
			t.Errorf("fleetwire_device_changes_total{op=%q,result=%q} = %v, want %v", tc.op, tc.result, got, tc.want)
		}
	}
}

// TestEdgeAuthOverTLS: the device registry is an admin's business. Over TLS with the
// guard, no token and an unknown token are Unauthenticated; a viewer, a dispatcher and a
// supervisor are refused adding, revoking and rotating a device (and reading the
// registry), each on a device a call let through would change; an admin does all three.
func TestEdgeAuthOverTLS(t *testing.T) {
	b := natstest.Bus(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg, err := natsauth.OpenDevices(ctx, b, 1, testLog())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{}, reg, testLog(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	client := func(conn *grpc.ClientConn) fleetv1.DeviceServiceClient { return fleetv1.NewDeviceServiceClient(conn) }
	read := func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := client(conn).GetDevice(ctx, &fleetv1.GetDeviceRequest{DeviceId: "veh-edge"})
		return err
	}
	add := func(id string) func(context.Context, *grpc.ClientConn) error {
		return func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := client(conn).AddDevice(ctx, &fleetv1.AddDeviceRequest{DeviceId: id})
			return err
		}
	}
	revoke := func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := client(conn).RevokeDevice(ctx, &fleetv1.RevokeDeviceRequest{DeviceId: "veh-edge"})
		return err
	}
	rotate := func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := client(conn).RotateDevice(ctx, &fleetv1.RotateDeviceRequest{DeviceId: "veh-edge"})
		return err
	}
	list := func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := client(conn).ListDevices(ctx, &fleetv1.ListDevicesRequest{})
		return err
	}
	// The admin adds veh-edge first: a refused revoke or rotate of it would otherwise
	// succeed, and a refused add of veh-new would create it.
	cases := []grpctest.AuthCase{{Name: "admin adds", Role: auth.Admin, Call: add("veh-edge"), Want: codes.OK}}
	for _, role := range []auth.Role{auth.Viewer, auth.Dispatcher, auth.Supervisor} {
		cases = append(cases,
			grpctest.AuthCase{Name: role.String() + " adds", Role: role, Call: add("veh-new"), Want: codes.PermissionDenied},
			grpctest.AuthCase{Name: role.String() + " revokes", Role: role, Call: revoke, Want: codes.PermissionDenied},
			grpctest.AuthCase{Name: role.String() + " rotates", Role: role, Call: rotate, Want: codes.PermissionDenied},
			grpctest.AuthCase{Name: role.String() + " reads", Role: role, Call: read, Want: codes.PermissionDenied},
			grpctest.AuthCase{Name: role.String() + " lists", Role: role, Call: list, Want: codes.PermissionDenied},
		)
	}
	cases = append(cases,
		grpctest.AuthCase{Name: "admin reads", Role: auth.Admin, Call: read, Want: codes.OK},
		grpctest.AuthCase{Name: "admin rotates", Role: auth.Admin, Call: rotate, Want: codes.OK},
		grpctest.AuthCase{Name: "admin revokes", Role: auth.Admin, Call: revoke, Want: codes.OK},
		// Nothing a refused call asked for happened.
		grpctest.AuthCase{Name: "refused add created nothing", Role: auth.Admin, Call: func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := client(conn).GetDevice(ctx, &fleetv1.GetDeviceRequest{DeviceId: "veh-new"})
			return err
		}, Want: codes.NotFound},
	)
	grpctest.ServeSecure(t, b, s.Register).CheckAuth(t, read, cases)

	d, err := reg.Get(context.Background(), "veh-edge")
	if err != nil {
		t.Fatal(err)
	}
	if d.State != natsauth.DeviceRevoked {
		t.Errorf("veh-edge after the admin's revoke: %+v, want revoked", d)
	}
}
