package launch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fleetwire/fleetwire/pkg/bus"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// TestAllInOneSurvivesRestart: the all-in-one keeps JetStream in its data directory, so
// the same command started again rebuilds the fleet it had; --ephemeral leaves nothing
// behind.
func TestAllInOneSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	start := func(o Options) *Platform {
		t.Helper()
		o.NATS = bus.Config{URL: bus.Embedded, ListenPort: -1}
		o.RedisURL, o.GRPCAddr, o.Grace = "memory", "127.0.0.1:0", 2*time.Second
		p, err := Start(context.Background(), o, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	vehicles := func(p *Platform, want int) {
		t.Helper()
		c := fleetv1.NewTrackingServiceClient(dial(t, p))
		deadline := time.Now().Add(90 * time.Second)
		for {
			r, err := c.ListVehicles(context.Background(), &fleetv1.ListVehiclesRequest{PageSize: 100})
			if err == nil && len(r.GetVehicles()) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("got %d vehicles (err %v), want %d", len(r.GetVehicles()), err, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	first := start(Options{DataDir: dir, Sim: 5, SimSeed: 3})
	vehicles(first, 5)
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Fatalf("no JetStream directory in the data directory: %v", err)
	}
	// Not ready before the rebuild is done; once ready, the whole fleet is there.
	second := start(Options{DataDir: dir})
	conn := dial(t, second)
	w, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("health watch: %v", err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
	}
	r, err := fleetv1.NewTrackingServiceClient(conn).ListVehicles(context.Background(), &fleetv1.ListVehiclesRequest{PageSize: 100})
	if err != nil || len(r.GetVehicles()) != 5 {
		t.Fatalf("ready, with %d vehicles (err %v); want 5", len(r.GetVehicles()), err)
	}
	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}

	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "fleetwire-js-*"))
	eph := start(Options{DataDir: dir, Ephemeral: true})
	if err := eph.Stop(); err != nil {
		t.Fatal(err)
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "fleetwire-js-*"))
	if len(after) > len(before) {
		t.Errorf("an ephemeral run left %d temporary directories behind", len(after)-len(before))
	}
}
