package loadtest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
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

func startDispatcher(t *testing.T, ctx context.Context, b *bus.Bus, hidden string) string {
	t.Helper()
	w := &watchServer{hidden: hidden, subs: map[chan *fleetv1.WatchVehiclesResponse]struct{}{}}
	gs := grpcserver.New(quietLog(), nil)
	fleetv1.RegisterTrackingServiceServer(gs.GRPC, w)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ctx, time.Second) }()
	cons, err := b.JS.OrderedConsumer(ctx, bus.TelemetryStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
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
				_ = b.NC.Publish(bus.EventSubject("tracking", "status_changed", r.VehicleID, "e-"+r.VehicleID), ev)
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
	return gs.Addr()
}

func openBus(t *testing.T) *bus.Bus {
	t.Helper()
	return natstest.Bus(t)
}

func TestLoadRunCountsMissingAndLatency(t *testing.T) {
	b := openBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	addr := startDispatcher(t, ctx, b, "t-00003")
	cfg := DefaultConfig()
	cfg.Vehicles, cfg.Rate, cfg.Duration, cfg.Drain, cfg.Prefix = 20, 100, 3*time.Second, 2*time.Second, "t-"
	// The verdict under test is about the missing records; a latency limit no loaded
	// machine can miss keeps it from depending on how busy the CPU is.
	cfg.P99Limit = time.Hour
	var progress bytes.Buffer
	cfg.Progress = &progress
	lt, err := New(cfg, b.NC, addr, quietLog())
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
	cfg.Vehicles, cfg.Rate, cfg.StepDuration, cfg.Drain, cfg.Prefix = 10, 40, 2*time.Second, time.Second, "c-"
	cfg.Ceiling, cfg.CeilingFactor, cfg.CeilingMax, cfg.P99Limit = true, 2, 200, time.Hour // verdicts by loss only
	tests := []struct {
		name      string
		hidden    string
		wantSteps int
		wantBest  float64
	}{
		{"every record arrives: up to the maximum", "", 3, 160},
		{"a vehicle never arrives: the first step fails", "c-s01-00002", 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startDispatcher(t, ctx, b, tt.hidden)
			lt, err := New(cfg, b.NC, addr, quietLog())
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
