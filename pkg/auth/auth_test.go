package auth_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// Every method of every fleet.v1 service has an access rule: a new RPC cannot ship open
// (nor, since a method without a rule is refused, ship unusable without anyone noticing).
func TestEveryMethodHasARule(t *testing.T) {
	_ = fleetv1.File_fleet_v1_access_proto // make sure the package's files are registered
	n := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("fleet.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			svc := fd.Services().Get(i)
			for j := 0; j < svc.Methods().Len(); j++ {
				m := svc.Methods().Get(j)
				full := "/" + string(svc.FullName()) + "/" + string(m.Name())
				n++
				rule, ok := auth.Policy[full]
				if !ok {
					t.Errorf("%s has no rule in auth.Policy", full)
					continue
				}
				if rule.Role == auth.RoleNone {
					t.Errorf("%s is public; only the health service may be", full)
				}
			}
		}
		return true
	})
	if n < 40 {
		t.Fatalf("found %d fleet.v1 methods, want the whole API (40+)", n)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// stubs answer just enough to show what the guard lets through and what it hides.
type trackingStub struct {
	fleetv1.UnimplementedTrackingServiceServer
}

func (trackingStub) GetVehicle(_ context.Context, r *fleetv1.GetVehicleRequest) (*fleetv1.GetVehicleResponse, error) {
	return &fleetv1.GetVehicleResponse{Vehicle: &fleetv1.Vehicle{VehicleId: r.GetVehicleId()}}, nil
}

var fleet = []string{"red-1", "red-2", "blue-1"}

func (trackingStub) ListVehicles(context.Context, *fleetv1.ListVehiclesRequest) (*fleetv1.ListVehiclesResponse, error) {
	resp := &fleetv1.ListVehiclesResponse{}
	for _, id := range fleet {
		resp.Vehicles = append(resp.Vehicles, &fleetv1.Vehicle{VehicleId: id})
	}
	return resp, nil
}

func (trackingStub) WatchVehicles(_ *fleetv1.WatchVehiclesRequest, s grpc.ServerStreamingServer[fleetv1.WatchVehiclesResponse]) error {
	for _, id := range fleet {
		if err := s.Send(&fleetv1.WatchVehiclesResponse{Vehicle: &fleetv1.Vehicle{VehicleId: id}}); err != nil {
			return err
		}
	}
	<-s.Context().Done()
	return nil
}

type commandStub struct {
	fleetv1.UnimplementedCommandServiceServer
}

func (commandStub) SendCommand(_ context.Context, r *fleetv1.SendCommandRequest) (*fleetv1.SendCommandResponse, error) {
	return &fleetv1.SendCommandResponse{Command: &fleetv1.Command{VehicleId: r.GetVehicleId(), Kind: r.GetKind(), IssuedBy: r.GetWho()}}, nil
}

type recorded struct{ entries chan auth.Entry }

func (r recorded) Record(_ context.Context, e auth.Entry) { r.entries <- e }

type env struct {
	addr   string
	creds  *auth.DevCredentials
	tokens *auth.Tokens
	groups *auth.Groups
	audit  recorded
}

func start(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	b := natstest.Open(t, natstest.Options{NoStreams: true})
	tokens, err := auth.OpenTokens(ctx, b, 1, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	groups, err := auth.OpenGroups(ctx, b, 1, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	for v, g := range map[string][]string{"red-1": {"red"}, "red-2": {"red", "night"}, "blue-1": {"blue"}} {
		if err := groups.Set(ctx, v, g); err != nil {
			t.Fatal(err)
		}
	}
	creds, err := auth.EnsureDevCredentials(filepath.Join(t.TempDir(), "credentials"))
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := auth.ServerTLS(creds.CertFile, creds.KeyFile, creds.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	rec := recorded{entries: make(chan auth.Entry, 16)}
	guard := auth.NewGuard(auth.Config{Tokens: tokens, MTLS: true, Groups: groups, Audit: rec, MaxWatches: 2, Log: quietLog()})
	gs := grpcserver.NewServer(quietLog(), nil, grpcserver.Config{TLS: tlsCfg, Guard: guard})
	fleetv1.RegisterTrackingServiceServer(gs.GRPC, trackingStub{})
	fleetv1.RegisterCommandServiceServer(gs.GRPC, commandStub{})
	tokens.Register(gs.GRPC)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ctx, time.Second) }()
	return &env{addr: gs.Addr(), creds: creds, tokens: tokens, groups: groups, audit: rec}
}

func (e *env) token(t *testing.T, name string, role auth.Role, groups ...string) string {
	t.Helper()
	_, secret, err := e.tokens.Create(context.Background(), name, role, groups, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

func (e *env) dial(t *testing.T, cfg grpcserver.ClientConfig) *grpc.ClientConn {
	t.Helper()
	if cfg.CAFile == "" {
		cfg.CAFile = e.creds.CAFile
	}
	conn, err := grpcserver.Dial(e.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestRolesPerMethod(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	viewer := e.token(t, "vera", auth.Viewer)
	dispatcher := e.token(t, "dan", auth.Dispatcher)
	supervisor := e.token(t, "sue", auth.Supervisor)
	certFile, keyFile, err := auth.IssueClientCert(e.creds.Dir, "ops-console", auth.Supervisor, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := func(k fleetv1.CommandKind) *fleetv1.SendCommandRequest {
		return &fleetv1.SendCommandRequest{VehicleId: "red-1", Kind: k, Who: "somebody-else"}
	}
	for _, tc := range []struct {
		name string
		cfg  grpcserver.ClientConfig
		call func(*grpc.ClientConn) error
		want codes.Code
	}{
		{"anonymous read", grpcserver.ClientConfig{}, func(c *grpc.ClientConn) error {
			_, err := fleetv1.NewTrackingServiceClient(c).GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "red-1"})
			return err
		}, codes.Unauthenticated},
		{"anonymous health check", grpcserver.ClientConfig{}, func(c *grpc.ClientConn) error {
			_, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}, codes.OK},
		{"wrong token", grpcserver.ClientConfig{Token: viewer[:len(viewer)-2] + "xx"}, func(c *grpc.ClientConn) error {
			_, err := fleetv1.NewTrackingServiceClient(c).GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "red-1"})
			return err
		}, codes.Unauthenticated},
		{"viewer reads", grpcserver.ClientConfig{Token: viewer}, func(c *grpc.ClientConn) error {
			_, err := fleetv1.NewTrackingServiceClient(c).GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "red-1"})
			return err
		}, codes.OK},
		{"viewer sends IMMOBILIZE", grpcserver.ClientConfig{Token: viewer}, func(c *grpc.ClientConn) error {
			_, err := fleetv1.NewCommandServiceClient(c).SendCommand(ctx, cmd(fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE))
			return err
		}, codes.PermissionDenied},
		{"viewer sends LOCATE_NOW", grpcserver.ClientConfig{Token: viewer}, func(c *grpc.ClientConn) error {
			_, err := fleetv1.NewCommandServiceClient(c).SendCommand(ctx, cmd(fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW))
			return err
		}, codes.PermissionDenied},
		{"dispatcher sends LOCATE_NOW", grpcserver.ClientConfig{Token: dispatcher}, func(c *grpc.ClientConn) error {
			_, err := fleetv1.NewCommandServiceClient(c).SendCommand(ctx, cmd(fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW))
			return err
		}, codes.OK},
		{"dispatcher sends IMMOBILIZE", grpcserver.ClientConfig{Token: dispatcher}, func(c *grpc.ClientConn) error {
			_, err := fleetv1.NewCommandServiceClient(c).SendCommand(ctx, cmd(fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE))
			return err
		}, codes.PermissionDenied},
		{"dispatcher creates a token", grpcserver.ClientConfig{Token: dispatcher}, func(c *grpc.ClientConn) error {
			_, err := fleetv1.NewTokenServiceClient(c).CreateToken(ctx, &fleetv1.CreateTokenRequest{Name: "x", Role: fleetv1.Role_ROLE_ADMIN})
			return err
		}, codes.PermissionDenied},
		{"supervisor sends RESUME", grpcserver.ClientConfig{Token: supervisor}, func(c *grpc.ClientConn) error {
			_, err := fleetv1.NewCommandServiceClient(c).SendCommand(ctx, cmd(fleetv1.CommandKind_COMMAND_KIND_RESUME))
			return err
		}, codes.OK},
		{"supervisor by client certificate sends IMMOBILIZE", grpcserver.ClientConfig{CertFile: certFile, KeyFile: keyFile}, func(c *grpc.ClientConn) error {
			_, err := fleetv1.NewCommandServiceClient(c).SendCommand(ctx, cmd(fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE))
			return err
		}, codes.OK},
		{"admin token of the all-in-one", grpcserver.ClientConfig{Token: mustEnsure(t, e)}, func(c *grpc.ClientConn) error {
			_, err := fleetv1.NewTokenServiceClient(c).ListTokens(ctx, &fleetv1.ListTokensRequest{})
			return err
		}, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(e.dial(t, tc.cfg))
			if got := status.Code(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

func mustEnsure(t *testing.T, e *env) string {
	t.Helper()
	if _, err := e.tokens.Ensure(context.Background(), e.creds.AdminToken, "admin", auth.Admin); err != nil {
		t.Fatal(err)
	}
	return e.creds.AdminToken
}

// "who" in a command and in the audit entry is the authenticated principal, whatever the
// request said.
func TestWhoIsThePrincipal(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := e.dial(t, grpcserver.ClientConfig{Token: e.token(t, "dan", auth.Dispatcher)})
	resp, err := fleetv1.NewCommandServiceClient(conn).SendCommand(ctx, &fleetv1.SendCommandRequest{
		VehicleId: "red-1", Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW, Who: "the-ceo"})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetCommand().GetIssuedBy(); got != "dan" {
		t.Errorf("issued_by = %q, want dan", got)
	}
	select {
	case en := <-e.audit.entries:
		if en.Principal.Name != "dan" || en.Method != "/fleet.v1.CommandService/SendCommand" || en.Peer == "" {
			t.Errorf("audit entry = %+v, want principal dan, the method and a peer", en)
		}
	case <-ctx.Done():
		t.Fatal("no audit entry")
	}
}

func TestRevokedTokenIsRefused(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ti, secret, err := e.tokens.Create(ctx, "temp", auth.Viewer, nil, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	c := fleetv1.NewTrackingServiceClient(e.dial(t, grpcserver.ClientConfig{Token: secret}))
	if _, err := c.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "red-1"}); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	if _, err := e.tokens.Revoke(ctx, ti.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "red-1"})
	if got := status.Code(err); got != codes.Unauthenticated {
		t.Fatalf("after revocation: got %v (%v), want Unauthenticated", got, err)
	}
	if _, err := e.tokens.Revoke(ctx, "0000000000000000"); !errors.Is(err, auth.ErrTokenNotFound) {
		t.Fatalf("revoking an unknown token: got %v, want ErrTokenNotFound", err)
	}
}

// A principal limited to the red group: blue vehicles do not exist for it.
func TestGroupScope(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := fleetv1.NewTrackingServiceClient(e.dial(t, grpcserver.ClientConfig{Token: e.token(t, "rita", auth.Viewer, "red")}))

	t.Run("own group", func(t *testing.T) {
		if _, err := c.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "red-2"}); err != nil {
			t.Fatalf("got %v, want the vehicle", err)
		}
	})
	t.Run("other group is not found", func(t *testing.T) {
		_, err := c.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "blue-1"})
		if got := status.Code(err); got != codes.NotFound {
			t.Fatalf("got %v (%v), want NotFound", got, err)
		}
	})
	t.Run("unregistered vehicle is not found", func(t *testing.T) {
		_, err := c.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: "ghost"})
		if got := status.Code(err); got != codes.NotFound {
			t.Fatalf("got %v (%v), want NotFound", got, err)
		}
	})
	t.Run("list", func(t *testing.T) {
		resp, err := c.ListVehicles(ctx, &fleetv1.ListVehiclesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, v := range resp.GetVehicles() {
			got = append(got, v.GetVehicleId())
		}
		if !slices.Equal(got, []string{"red-1", "red-2"}) {
			t.Fatalf("listed %v, want [red-1 red-2]", got)
		}
	})
	t.Run("watch", func(t *testing.T) {
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		s, err := c.WatchVehicles(wctx, &fleetv1.WatchVehiclesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for range 2 {
			m, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m.GetVehicle().GetVehicleId())
		}
		if !slices.Equal(got, []string{"red-1", "red-2"}) {
			t.Fatalf("watched %v, want [red-1 red-2]", got)
		}
	})
	t.Run("watch naming another group's vehicle", func(t *testing.T) {
		s, err := c.WatchVehicles(ctx, &fleetv1.WatchVehiclesRequest{VehicleIds: []string{"blue-1"}})
		if err == nil {
			_, err = s.Recv()
		}
		if got := status.Code(err); got != codes.NotFound {
			t.Fatalf("got %v (%v), want NotFound", got, err)
		}
	})
}

func TestWatchCapPerPrincipal(t *testing.T) {
	e := start(t) // MaxWatches: 2
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := fleetv1.NewTrackingServiceClient(e.dial(t, grpcserver.ClientConfig{Token: e.token(t, "wally", auth.Viewer)}))
	for i := range 2 {
		s, err := c.WatchVehicles(ctx, &fleetv1.WatchVehiclesRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		if err != nil {
			t.Fatalf("watch %d: %v", i+1, err)
		}
	}
	s, err := c.WatchVehicles(ctx, &fleetv1.WatchVehiclesRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	if got := status.Code(err); got != codes.ResourceExhausted {
		t.Fatalf("third watch: got %v (%v), want ResourceExhausted", got, err)
	}
	other := fleetv1.NewTrackingServiceClient(e.dial(t, grpcserver.ClientConfig{Token: e.token(t, "olga", auth.Viewer)}))
	s, err = other.WatchVehicles(ctx, &fleetv1.WatchVehiclesRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	if err != nil {
		t.Fatalf("another principal's watch: %v", err)
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"short", "short"},
		{string(make([]byte, 64)), string(make([]byte, 64))},
	} {
		if got := auth.Truncate(tc.in); got != tc.want {
			t.Errorf("Truncate(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := ""
	for range 100 {
		long += "é"
	}
	got := auth.Truncate(long)
	if len(got) > 64+20 || got[:62] != long[:62] {
		t.Errorf("Truncate of 200 bytes = %q (%d bytes), want a cut near 64 bytes on a rune boundary", got, len(got))
	}
}
