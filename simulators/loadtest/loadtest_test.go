package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// watchServer is a minimal dispatcher: it reads the telemetry stream and streams every
// record to WatchVehicles clients, except for one vehicle it never shows (so the load
// test must count that vehicle's records as missing). On a vehicle's first record it
// publishes a status event.
type watchServer struct {
	fleetv1.UnimplementedTrackingServiceServer
	hidden string
	mu     sync.Mutex
	subs   map[chan *fleetv1.WatchVehiclesResponse]struct{}
}

func (w *watchServer) WatchVehicles(_ *fleetv1.WatchVehiclesRequest, stream fleetv1.TrackingService_WatchVehiclesServer) error {
	ch := make(chan *fleetv1.WatchVehiclesResponse, 1<<16)
	w.mu.Lock()
	w.subs[ch] = struct{}{}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.subs, ch)
		w.mu.Unlock()
	}()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case m := <-ch:
			if err := stream.Send(m); err != nil {
				return err
			}
		}
	}
}

// zoneServer is a minimal geofence service: it keeps the zones it is given and streams
// one "enter" event per vehicle (on its first record) to WatchZoneEvents clients.
type zoneServer struct {
	fleetv1.UnimplementedGeofenceServiceServer
	mu      sync.Mutex
	zones   map[string]*fleetv1.Zone
	created int
	subs    map[chan *fleetv1.Event]struct{}
}

func (z *zoneServer) CreateZone(_ context.Context, req *fleetv1.CreateZoneRequest) (*fleetv1.CreateZoneResponse, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.zones[req.GetZone().GetZoneId()] = req.GetZone()
	z.created++
	return &fleetv1.CreateZoneResponse{Zone: req.GetZone()}, nil
}

func (z *zoneServer) DeleteZone(_ context.Context, req *fleetv1.DeleteZoneRequest) (*fleetv1.DeleteZoneResponse, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	delete(z.zones, req.GetZoneId())
	return &fleetv1.DeleteZoneResponse{}, nil
}

func (z *zoneServer) WatchZoneEvents(_ *fleetv1.WatchZoneEventsRequest, stream fleetv1.GeofenceService_WatchZoneEventsServer) error {
	ch := make(chan *fleetv1.Event, 1<<16)
	z.mu.Lock()
	z.subs[ch] = struct{}{}
	z.mu.Unlock()
	defer func() {
		z.mu.Lock()
		delete(z.subs, ch)
		z.mu.Unlock()
	}()
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case e := <-ch:
			if err := stream.Send(&fleetv1.WatchZoneEventsResponse{Event: e}); err != nil {
				return err
			}
		}
	}
}

func (z *zoneServer) publish(e *fleetv1.Event) {
	z.mu.Lock()
	defer z.mu.Unlock()
	for ch := range z.subs {
		ch <- e
	}
}

func startDispatcher(t *testing.T, ctx context.Context, b *bus.Bus, hidden string) string {
	addr, _ := startDispatcherWithZones(t, ctx, b, hidden)
	return addr
}

func startDispatcherWithZones(t *testing.T, ctx context.Context, b *bus.Bus, hidden string) (string, *zoneServer) {
	t.Helper()
	w := &watchServer{hidden: hidden, subs: map[chan *fleetv1.WatchVehiclesResponse]struct{}{}}
	z := &zoneServer{zones: map[string]*fleetv1.Zone{}, subs: map[chan *fleetv1.Event]struct{}{}}
	gs := grpcserver.New(quietLog(), nil)
	fleetv1.RegisterTrackingServiceServer(gs.GRPC, w)
	fleetv1.RegisterGeofenceServiceServer(gs.GRPC, z)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ctx, time.Second) }()
	cons, err := b.OrderedConsumer(ctx, bus.TelemetryStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		addr, err := bus.ParseSubject(m.Subject())
		if err != nil || addr.Kind == bus.KindReply {
			return
		}
		recs, _, err := wire.DecodeBatch(addr.Vehicle, m.Data(), false)
		if err != nil {
			t.Errorf("decode: %v", err)
			return
		}
		for _, r := range recs {
			if !seen[r.VehicleID] {
				seen[r.VehicleID] = true
				ev, _ := proto.Marshal(&fleetv1.Event{EventId: "e-" + r.VehicleID, Source: "tracking", Kind: "status_changed",
					VehicleId: r.VehicleID, Time: timestamppb.New(r.DeviceTime)})
				_ = b.Conn().Publish(bus.EventSubject("tracking", "status_changed", r.VehicleID, "e-"+r.VehicleID), ev)
				z.publish(&fleetv1.Event{EventId: "z-" + r.VehicleID, Source: "geofence", Kind: "enter",
					VehicleId: r.VehicleID, Time: timestamppb.New(r.DeviceTime)})
			}
			if r.VehicleID == w.hidden {
				continue
			}
			resp := &fleetv1.WatchVehiclesResponse{Vehicle: &fleetv1.Vehicle{VehicleId: r.VehicleID, State: &fleetv1.VehicleState{
				LastDeviceTime: timestamppb.New(r.DeviceTime), LastSentTime: timestamppb.New(r.SentTime), LastSequence: r.Sequence,
			}}}
			w.mu.Lock()
			for ch := range w.subs {
				ch <- resp
			}
			w.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return gs.Addr(), z
}

func openBus(t *testing.T) *bus.Bus {
	t.Helper()
	return natstest.Bus(t)
}

func TestLoadRunCountsMissingAndLatency(t *testing.T) {
	b := openBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	addr := startDispatcher(t, ctx, b, "loadtest-t-00003")
	cfg := DefaultConfig()
	cfg.Vehicles, cfg.Rate, cfg.Duration, cfg.Drain, cfg.Prefix = 20, 100, 3*time.Second, 2*time.Second, "loadtest-t-"
	// The verdict under test is about the missing records; a latency limit no loaded
	// machine can miss keeps it from depending on how busy the CPU is.
	cfg.P99Limit = time.Hour
	var progress bytes.Buffer
	cfg.Progress = &progress
	lt, err := New(cfg, b.Conn(), addr, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer lt.Close()
	res, err := lt.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 1 {
		t.Fatalf("got %d steps, want 1", len(res.Steps))
	}
	st := res.Steps[0]
	if st.Published == 0 || st.PublishErrors != 0 {
		t.Fatalf("published %d records with %d errors", st.Published, st.PublishErrors)
	}
	// Exactly the hidden vehicle's records are missing.
	if st.MissingVeh != 1 {
		t.Errorf("missing vehicles: got %d, want 1", st.MissingVeh)
	}
	if st.Missing == 0 || st.Delivered+st.Missing != st.Published {
		t.Errorf("delivered %d + missing %d, want published %d", st.Delivered, st.Missing, st.Published)
	}
	if st.Pass || !strings.Contains(st.Verdict, "missing") {
		t.Errorf("verdict %q (pass %v), want a failure for the missing records", st.Verdict, st.Pass)
	}
	if st.Latency.Samples == 0 || st.Latency.P99Ms <= 0 || st.Latency.P50Ms > st.Latency.P99Ms {
		t.Errorf("latency %+v, want samples with p50 ≤ p99", st.Latency)
	}
	if got := st.Events["tracking.status_changed"]; got != uint64(cfg.Vehicles) {
		t.Errorf("status events: got %d, want %d", got, cfg.Vehicles)
	}
	if st.EventLatency.Samples != uint64(cfg.Vehicles) {
		t.Errorf("event latency samples: got %d, want %d", st.EventLatency.Samples, cfg.Vehicles)
	}
	if !strings.Contains(progress.String(), "p99") {
		t.Errorf("no progress line written: %q", progress.String())
	}

	var sum, js, html bytes.Buffer
	if err := res.WriteSummary(&sum); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sum.String(), "p99 ms") {
		t.Errorf("summary lacks the latency columns:\n%s", sum.String())
	}
	if err := res.WriteJSON(&js); err != nil || !strings.Contains(js.String(), `"missing_records"`) {
		t.Errorf("JSON result: %v\n%s", err, js.String())
	}
	if err := res.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	h := html.String()
	if strings.Count(h, "<svg") != 2 || strings.Contains(h, "<script") || strings.Count(h, "http") != strings.Count(h, `xmlns="http://www.w3.org/2000/svg"`) {
		t.Errorf("HTML report must hold two inline SVG charts and no external references")
	}
}

func TestCeilingStopsAtLoss(t *testing.T) {
	b := openBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cfg := DefaultConfig()
	cfg.Vehicles, cfg.Rate, cfg.StepDuration, cfg.Drain, cfg.Prefix = 10, 40, 2*time.Second, time.Second, "loadtest-c-"
	cfg.Ceiling, cfg.CeilingFactor, cfg.CeilingMax, cfg.P99Limit = true, 2, 200, time.Hour // verdicts by loss only
	tests := []struct {
		name      string
		hidden    string
		wantSteps int
		wantBest  float64
	}{
		{"every record arrives: up to the maximum", "", 3, 160},
		{"a vehicle never arrives: the first step fails", "loadtest-c-00002", 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startDispatcher(t, ctx, b, tt.hidden)
			lt, err := New(cfg, b.Conn(), addr, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			defer lt.Close()
			res, err := lt.Run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Steps) != tt.wantSteps || res.Ceiling.HighestSustained != tt.wantBest {
				t.Errorf("got %d steps, best %v (%s); want %d, %v", len(res.Steps), res.Ceiling.HighestSustained, res.Ceiling.Reason, tt.wantSteps, tt.wantBest)
			}
		})
	}
}

func TestZonesAreCreatedWatchedAndRemoved(t *testing.T) {
	b := openBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	addr, zs := startDispatcherWithZones(t, ctx, b, "")
	cfg := DefaultConfig()
	cfg.Vehicles, cfg.Rate, cfg.Duration, cfg.Drain, cfg.Prefix = 12, 60, 2*time.Second, 2*time.Second, "zt-"
	cfg.Zones, cfg.P99Limit = 7, time.Hour
	lt, err := New(cfg, b.Conn(), addr, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer lt.Close()
	res, err := lt.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	zs.mu.Lock()
	created, left := zs.created, len(zs.zones)
	zs.mu.Unlock()
	if created != cfg.Zones || left != 0 {
		t.Errorf("zones created %d, left after the run %d; want %d and 0", created, left, cfg.Zones)
	}
	st := res.Steps[0]
	if got := st.ZoneEvents["enter"]; got != uint64(cfg.Vehicles) {
		t.Errorf("zone events: got %v, want %d enters", st.ZoneEvents, cfg.Vehicles)
	}
	if st.ZoneLatency.Samples != uint64(cfg.Vehicles) || st.ZoneLatency.P50Ms > st.ZoneLatency.P99Ms {
		t.Errorf("zone latency %+v, want %d samples with p50 ≤ p99", st.ZoneLatency, cfg.Vehicles)
	}
	if res.Zones != cfg.Zones || res.Err() != nil {
		t.Errorf("result zones %d, verdict %v; want %d and a pass", res.Zones, res.Err(), cfg.Zones)
	}
	var sum bytes.Buffer
	if err := res.WriteSummary(&sum); err != nil || !strings.Contains(sum.String(), "zone events") {
		t.Errorf("summary lacks the zone events: %v\n%s", err, sum.String())
	}
}

func TestZoneLayout(t *testing.T) {
	center := geo.Point{Lat: 52.52, Lon: 13.405}
	tests := []struct{ n, want int }{{0, 0}, {1, 1}, {7, 7}, {200, 200}}
	for _, tt := range tests {
		zones := ZoneLayout("p-", tt.n, center)
		if len(zones) != tt.want {
			t.Fatalf("%d zones: got %d", tt.n, len(zones))
		}
		ids := map[string]bool{}
		for _, z := range zones {
			if ids[z.GetZoneId()] {
				t.Errorf("duplicate zone id %s", z.GetZoneId())
			}
			ids[z.GetZoneId()] = true
			var g struct {
				Type        string
				Coordinates [][][2]float64
			}
			if err := json.Unmarshal([]byte(z.GetGeojson()), &g); err != nil || g.Type != "Polygon" || len(g.Coordinates) != 1 {
				t.Fatalf("zone %s: not a one-ring polygon: %v %s", z.GetZoneId(), err, z.GetGeojson())
			}
			ring := g.Coordinates[0]
			if len(ring) != 5 || ring[0] != ring[4] {
				t.Errorf("zone %s: ring not closed: %v", z.GetZoneId(), ring)
			}
			// Every corner lies within the simulated city (±6 km of the centre).
			for _, c := range ring {
				if d := geo.DistanceM(center, geo.Point{Lat: c[1], Lon: c[0]}); d > 6000*math.Sqrt2+1 {
					t.Errorf("zone %s corner %v is %.0f m from the city centre", z.GetZoneId(), c, d)
				}
			}
		}
	}
	if got := zonePrefix("a.b c-d_1"); got != "a_b_c-d_1" {
		t.Errorf("zonePrefix: got %q", got)
	}
}

func TestResultErr(t *testing.T) {
	pass, fail := StepResult{Pass: true}, StepResult{Pass: false, Verdict: "p99 high"}
	tests := []struct {
		name    string
		r       Result
		wantErr bool
	}{
		{"one passing step", Result{Steps: []StepResult{pass}}, false},
		{"one failing step", Result{Steps: []StepResult{fail}}, true},
		{"no step", Result{}, true},
		{"ceiling found above zero", Result{Steps: []StepResult{pass, fail}, Ceiling: &Ceiling{HighestSustained: 1500}}, false},
		{"ceiling: even the first step failed", Result{Steps: []StepResult{fail}, Ceiling: &Ceiling{}}, true},
	}
	for _, tt := range tests {
		err := tt.r.Err()
		if (err != nil) != tt.wantErr || err != nil && !errors.Is(err, ErrFail) {
			t.Errorf("%s: got %v, want error %v (wrapping ErrFail)", tt.name, err, tt.wantErr)
		}
	}
}
