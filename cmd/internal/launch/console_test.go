package launch

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// The console's API is the gRPC API over the Connect protocol: the same tokens, roles,
// group scoping and watch streams, through a real Connect client over HTTP.
func TestConsoleSpeaksConnectWithTheSameAuth(t *testing.T) {
	p := startPlatform(t, Options{RedisURL: "memory", ConsoleAddr: "127.0.0.1:0", ConsoleTiles: "none", Sim: 5, SimSeed: 3})
	if !strings.HasPrefix(p.ConsoleURL, "http://127.0.0.1:") {
		t.Fatalf("console URL %q: want plain HTTP on loopback", p.ConsoleURL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := dial(t, p)
	tokens := fleetv1.NewTokenServiceClient(admin)
	secret := func(name string, role fleetv1.Role, groups ...string) string {
		t.Helper()
		resp, err := tokens.CreateToken(ctx, &fleetv1.CreateTokenRequest{Name: name, Role: role, Groups: groups})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetSecret()
	}
	base := strings.TrimSuffix(p.ConsoleURL, "/")
	bearer := func(tok string) connect.ClientOption {
		return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				if tok != "" {
					req.Header().Set("Authorization", "Bearer "+tok)
				}
				return next(ctx, req)
			}
		}))
	}
	whoami := func(tok string) (*fleetv1.WhoAmIResponse, error) {
		c := connect.NewClient[fleetv1.WhoAmIRequest, fleetv1.WhoAmIResponse](http.DefaultClient, base+"/fleet.v1.IdentityService/WhoAmI", connect.WithProtoJSON(), bearer(tok))
		r, err := c.CallUnary(ctx, connect.NewRequest(&fleetv1.WhoAmIRequest{}))
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	}

	viewer := secret("vera", fleetv1.Role_ROLE_VIEWER)
	red := secret("rita", fleetv1.Role_ROLE_DISPATCHER, "red")
	for _, tc := range []struct {
		name, token string
		code        connect.Code // 0: allowed
		role        fleetv1.Role
	}{
		{"no token", "", connect.CodeUnauthenticated, 0},
		{"unknown token", "nope", connect.CodeUnauthenticated, 0},
		{"viewer", viewer, 0, fleetv1.Role_ROLE_VIEWER},
		{"admin", p.AdminToken, 0, fleetv1.Role_ROLE_ADMIN},
	} {
		t.Run("whoami "+tc.name, func(t *testing.T) {
			r, err := whoami(tc.token)
			if tc.code != 0 {
				if connect.CodeOf(err) != tc.code {
					t.Fatalf("err %v, want %v", err, tc.code)
				}
				return
			}
			if err != nil || r.GetRole() != tc.role {
				t.Fatalf("whoami: %v %v, want role %v", r, err, tc.role)
			}
		})
	}

	// Roles: a viewer may not immobilise, over Connect as over gRPC.
	send := connect.NewClient[fleetv1.SendCommandRequest, fleetv1.SendCommandResponse](http.DefaultClient, base+"/fleet.v1.CommandService/SendCommand", bearer(viewer))
	_, err := send.CallUnary(ctx, connect.NewRequest(&fleetv1.SendCommandRequest{VehicleId: "veh-00001", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("viewer IMMOBILIZE over Connect: %v, want permission denied", err)
	}

	// Group scoping: a principal limited to "red" sees none of the simulated vehicles.
	list := func(tok string) int {
		c := connect.NewClient[fleetv1.ListVehiclesRequest, fleetv1.ListVehiclesResponse](http.DefaultClient, base+"/fleet.v1.TrackingService/ListVehicles", connect.WithProtoJSON(), bearer(tok))
		r, err := c.CallUnary(ctx, connect.NewRequest(&fleetv1.ListVehiclesRequest{PageSize: 100}))
		if err != nil {
			t.Fatal(err)
		}
		return len(r.Msg.GetVehicles())
	}
	deadline := time.Now().Add(30 * time.Second)
	for list(p.AdminToken) < 5 {
		if time.Now().After(deadline) {
			t.Fatal("the simulated vehicles never appeared")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := list(red); n != 0 {
		t.Fatalf("a red-scoped principal sees %d vehicles, want 0", n)
	}

	// A server stream over Connect: WatchVehicles with bounds sends the snapshot.
	watch := connect.NewClient[fleetv1.WatchVehiclesRequest, fleetv1.WatchVehiclesResponse](http.DefaultClient, base+"/fleet.v1.TrackingService/WatchVehicles", connect.WithProtoJSON())
	req := connect.NewRequest(&fleetv1.WatchVehiclesRequest{Bounds: &fleetv1.BoundingBox{MinLatitude: 50, MaxLatitude: 55, MinLongitude: 10, MaxLongitude: 16}})
	req.Header().Set("Authorization", "Bearer "+viewer)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	stream, err := watch.CallServerStream(wctx, req)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < 5 && stream.Receive() {
		seen[stream.Msg().GetVehicle().GetVehicleId()] = true
	}
	if len(seen) < 5 {
		t.Fatalf("watch over Connect saw %d vehicles (%v)", len(seen), stream.Err())
	}
	_ = stream.Close()

	// The page and its assets, with a policy that keeps foreign scripts out.
	res, err := http.Get(p.ConsoleURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "js/app.js") || !strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("index: %d %q csp %q", res.StatusCode, body[:min(len(body), 200)], res.Header.Get("Content-Security-Policy"))
	}
}
