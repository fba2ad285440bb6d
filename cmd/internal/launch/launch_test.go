package launch

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func quietLog() *slog.Logger {
	if os.Getenv("LAUNCH_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startPlatform(t *testing.T, o Options) *Platform {
	t.Helper()
	if o.NATS.URL == "" {
		o.NATS = bus.Config{URL: bus.Embedded, ListenPort: -1}
	}
	o.Streams.MemoryStorage = true
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.GRPCAddr == "" {
		o.GRPCAddr = "127.0.0.1:0"
	}
	o.Grace = 2 * time.Second
	p, err := Start(context.Background(), o, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return p
}

// dial connects to p as its admin, over TLS with the development credentials p created.
func dial(t *testing.T, p *Platform) *grpc.ClientConn {
	t.Helper()
	conn, err := p.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// The walking skeleton end to end: embedded NATS, the three services and a simulated fleet
// in one process; a dispatcher's WatchVehicles stream sees every simulated vehicle move.
func TestSimulatedFleetReachesDispatcher(t *testing.T) {
	const vehicles = 40
	p := startPlatform(t, Options{RedisURL: "memory", Sim: vehicles, SimSeed: 7})
	conn := dial(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	stream, err := fleetv1.NewTrackingServiceClient(conn).WatchVehicles(ctx, &fleetv1.WatchVehiclesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]int{}
	for len(live) < vehicles {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("after live updates from %d of %d vehicles: %v", len(live), vehicles, err)
		}
		if msg.GetSnapshot() || msg.GetVehicle().GetState().GetLastFix() == nil {
			continue
		}
		live[msg.GetVehicle().GetVehicleId()]++
	}

	// The same vehicles are listed, with positions.
	resp, err := fleetv1.NewTrackingServiceClient(conn).ListVehicles(ctx, &fleetv1.ListVehiclesRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(resp.GetVehicles()); got != vehicles {
		t.Fatalf("ListVehicles returned %d vehicles, want %d", got, vehicles)
	}
	for _, v := range resp.GetVehicles() {
		if live[v.GetVehicleId()] == 0 {
			t.Errorf("listed vehicle %s never appeared in the watch stream", v.GetVehicleId())
		}
	}
}

// Every service answers the standard health check and is discoverable by reflection, and
// geofence and maintenance answer a real RPC.
func TestServicesAnswerHealthReflectionAndRPCs(t *testing.T) {
	p := startPlatform(t, Options{RedisURL: "memory"})
	conn := dial(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Health turns SERVING once every consumer has caught up (an empty stream: at once);
	// Watch reports the change as it happens.
	for _, svc := range []string{"", "fleet.v1.TrackingService", "fleet.v1.GeofenceService", "fleet.v1.MaintenanceService"} {
		w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatal(err)
		}
		for {
			resp, err := w.Recv()
			if err != nil {
				t.Fatalf("health of %q: %v; want SERVING", svc, err)
			}
			if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				break
			}
		}
	}

	rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range rr.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	sort.Strings(names)
	for _, want := range []string{"fleet.v1.GeofenceService", "fleet.v1.MaintenanceService", "fleet.v1.TrackingService", "grpc.health.v1.Health"} {
		i := sort.SearchStrings(names, want)
		if i == len(names) || names[i] != want {
			t.Errorf("reflection lists %v; %s missing", names, want)
		}
	}

	if _, err := fleetv1.NewGeofenceServiceClient(conn).ListZones(ctx, &fleetv1.ListZonesRequest{}); err != nil {
		t.Errorf("GeofenceService.ListZones: %v", err)
	}
	if _, err := fleetv1.NewMaintenanceServiceClient(conn).ListDue(ctx, &fleetv1.ListDueRequest{}); err != nil {
		t.Errorf("MaintenanceService.ListDue: %v", err)
	}
}

// Per-service processes against Redis: two tracking instances, each with half of the
// partitions, share one Redis; a dispatcher connected to either sees the whole fleet.
func TestTwoTrackingInstancesShareRedis(t *testing.T) {
	rc := redistest.Client(t)
	prefix := redistest.Prefix(t, rc)
	hub := startPlatform(t, Options{RedisURL: "memory", Services: []string{Geofence}, Sim: 30, SimSeed: 3})
	natsURL := hub.Bus.ClientURL()
	var insts []*Platform
	for _, part := range []string{"0/2", "1/2"} {
		insts = append(insts, startPlatform(t, Options{
			// Each instance logs in as the tracking identity, as a deployment configures it.
			NATS:     bus.Config{URL: natsURL, User: natsauth.UserTracking, Password: hub.NATSCredentials.Passwords[natsauth.UserTracking]},
			RedisURL: redistest.URL(), RedisPrefix: prefix,
			Services: []string{Tracking}, Partitions: part,
		}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, inst := range insts {
		client := fleetv1.NewTrackingServiceClient(dial(t, inst))
		for {
			resp, err := client.ListVehicles(ctx, &fleetv1.ListVehiclesRequest{PageSize: 1000})
			if err != nil {
				t.Fatal(err)
			}
			seen := 0
			for _, v := range resp.GetVehicles() {
				if v.GetState().GetLastFix() != nil {
					seen++
				}
			}
			if seen == 30 {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("instance %s sees %d of 30 vehicles with a position", inst.GRPCAddr, seen)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// The all-in-one reads each telemetry partition once (shared-pNN); --separate-consumers,
// like separate processes, gives every service its own durables. Both reach the
// dispatcher and report ready.
func TestSharedDeliveryWiring(t *testing.T) {
	for _, separate := range []bool{false, true} {
		t.Run(map[bool]string{false: "shared", true: "separate"}[separate], func(t *testing.T) {
			p := startPlatform(t, Options{RedisURL: "memory", Sim: 5, SimSeed: 3, SeparateConsumers: separate})
			conn := dial(t, p)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			health := healthpb.NewHealthClient(conn)
			for {
				r, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
				if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("never ready: %v %v", r, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			names := map[string]int{}
			stream, err := p.Bus.Stream(ctx, bus.TelemetryStream)
			if err != nil {
				t.Fatal(err)
			}
			lister := stream.ConsumerNames(ctx)
			for n := range lister.Name() {
				i := len(n) - len("-p00")
				if i > 0 {
					names[n[:i]]++
				}
			}
			want := map[string]int{bus.SharedDurable: bus.DefaultPartitions}
			if separate {
				want = map[string]int{Tracking: bus.DefaultPartitions, Geofence: bus.DefaultPartitions,
					Maintenance: bus.DefaultPartitions, Dispatch: bus.DefaultPartitions}
			}
			if len(names) != len(want) {
				t.Errorf("durables by service: got %v, want %v", names, want)
			}
			for k, n := range want {
				if names[k] != n {
					t.Errorf("durables by service: got %v, want %v", names, want)
				}
			}
		})
	}
}
