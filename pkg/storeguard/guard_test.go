package storeguard_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/storeguard"
)

func TestDecide(t *testing.T) {
	tests := []struct {
		name                    string
		marker                  string
		hasData                 bool
		recorded                []string
		applied                 []bool
		all                     bool
		want                    storeguard.Action
		wantWipe, wantNewMarker bool
	}{
		{name: "new store, new consumers", recorded: []string{"", ""}, applied: []bool{false, false}, want: storeguard.OK, wantNewMarker: true},
		{name: "same generation", marker: "e1", recorded: []string{"e1", "e1"}, applied: []bool{true, true}, want: storeguard.OK},
		{name: "marker present, nothing recorded yet (adopt)", marker: "e1", recorded: []string{"", ""}, applied: []bool{true, false}, want: storeguard.OK},
		{name: "restarted empty", recorded: []string{"e1", "e1"}, applied: []bool{true, true}, want: storeguard.Rebuild, wantWipe: true, wantNewMarker: true},
		{name: "restarted empty, writes since", hasData: true, recorded: []string{"e1", ""}, applied: []bool{true, false}, want: storeguard.Rebuild, wantWipe: true, wantNewMarker: true},
		{name: "older store with data, no marker", hasData: true, recorded: []string{"", ""}, applied: []bool{true, true}, want: storeguard.OK, wantNewMarker: true},
		{name: "empty, no marker, input applied", recorded: []string{"", ""}, applied: []bool{false, true}, want: storeguard.Rebuild, wantNewMarker: true},
		{name: "other generation, shared store", marker: "e2", recorded: []string{"e1", "e2"}, applied: []bool{true, true}, want: storeguard.Rebuild},
		{name: "other generation, sole writer", marker: "e2", recorded: []string{"e1"}, applied: []bool{true}, all: true, want: storeguard.Rebuild, wantWipe: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := storeguard.Decide(tt.marker, tt.hasData, tt.recorded, tt.applied, tt.all)
			if d.Action != tt.want || d.Wipe != tt.wantWipe || d.NewMarker != tt.wantNewMarker {
				t.Errorf("got %+v, want action %v wipe %v new marker %v", d, tt.want, tt.wantWipe, tt.wantNewMarker)
			}
			if d.Reason == "" {
				t.Error("no reason given")
			}
		})
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A store that comes back empty while the consumers recorded its generation is found at
// start (rebuild, wipe of what was written since) and while running (ErrStoreLost, no
// batch passes the check).
func TestGuardFindsALostStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rdb := redistest.Client(t)
	ns := redistest.Prefix(t, rdb) + "svc:"
	b := natstest.Bus(t)
	reg := prometheus.NewRegistry()
	m, err := storeguard.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := storeguard.Config{Service: "svc", Namespace: ns, AllPartitions: true, Interval: 50 * time.Millisecond,
		Durables: []storeguard.Durable{{Stream: bus.TelemetryStream, Name: "svc-p00"}, {Stream: bus.TelemetryStream, Name: "svc-p01"}}}

	// First start: a new store.
	g := storeguard.New(cfg, rdb, b, m, quiet())
	rebuild, err := g.Prepare(ctx)
	if err != nil || rebuild {
		t.Fatalf("first start: rebuild %v, err %v; want no rebuild", rebuild, err)
	}
	first := g.Epoch()
	if first == "" {
		t.Fatal("no marker written")
	}
	if err := g.Check(ctx); err != nil {
		t.Fatalf("check of an intact store: %v", err)
	}

	// A second start against the same store resumes.
	g2 := storeguard.New(cfg, rdb, b, m, quiet())
	if rebuild, err := g2.Prepare(ctx); err != nil || rebuild || g2.Epoch() != first {
		t.Fatalf("restart on an intact store: rebuild %v, epoch %q (want %q), err %v", rebuild, g2.Epoch(), first, err)
	}

	// Running, the store loses everything, then a batch writes into the empty one.
	runErr := make(chan error, 1)
	go func() { runErr <- g2.Run(ctx) }()
	if _, err := storeguard.Wipe(ctx, rdb, ns); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, ns+"v:veh-1", "written after the loss", 0).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-runErr:
		if !errors.Is(err, storeguard.ErrStoreLost) {
			t.Fatalf("Run: got %v, want ErrStoreLost", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not notice the lost store")
	}
	if g2.OK() {
		t.Error("guard still reports OK after the loss")
	}
	if err := g2.Check(ctx); !errors.Is(err, storeguard.ErrStoreLost) {
		t.Errorf("check after the loss: got %v, want ErrStoreLost", err)
	}
	if got := testutil.ToFloat64(m.Losses.WithLabelValues("svc", "run")); got != 1 {
		t.Errorf("losses at run time: got %v, want 1", got)
	}

	// Started again: rebuild, and what was written after the loss is gone.
	g3 := storeguard.New(cfg, rdb, b, m, quiet())
	rebuild, err = g3.Prepare(ctx)
	if err != nil || !rebuild {
		t.Fatalf("start after the loss: rebuild %v, err %v; want a rebuild", rebuild, err)
	}
	if g3.Epoch() == "" || g3.Epoch() == first {
		t.Errorf("epoch after the loss: got %q, want a new one (old %q)", g3.Epoch(), first)
	}
	if n, _ := rdb.Exists(ctx, ns+"v:veh-1").Result(); n != 0 {
		t.Error("a key written into the empty store survived the rebuild's wipe")
	}
	if got := testutil.ToFloat64(m.Losses.WithLabelValues("svc", "start")); got != 1 {
		t.Errorf("losses at start: got %v, want 1", got)
	}
	// Until the consumers have rewound, the old epoch stays recorded: a crash now
	// rebuilds again instead of resuming past an empty store.
	g4 := storeguard.New(cfg, rdb, b, m, quiet())
	if rebuild, err := g4.Prepare(ctx); err != nil || !rebuild {
		t.Fatalf("start during an unfinished rebuild: rebuild %v, err %v; want a rebuild", rebuild, err)
	}
}

// A different generation in a store shared with other instances rebuilds without wiping
// their data.
func TestGuardSharedStoreOfAnotherGeneration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := redistest.Client(t)
	ns := redistest.Prefix(t, rdb) + "svc:"
	b := natstest.Bus(t)
	m, _ := storeguard.NewMetrics(nil)
	cfg := storeguard.Config{Service: "svc", Namespace: ns, Durables: []storeguard.Durable{{Stream: bus.TelemetryStream, Name: "svc-p03"}}}
	if _, err := storeguard.New(cfg, rdb, b, m, quiet()).Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	// Another instance found the store empty and renewed it, and has rebuilt some.
	if err := rdb.Set(ctx, ns+"epoch", "other", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, ns+"v:veh-2", "theirs", 0).Err(); err != nil {
		t.Fatal(err)
	}
	g := storeguard.New(cfg, rdb, b, m, quiet())
	rebuild, err := g.Prepare(ctx)
	if err != nil || !rebuild {
		t.Fatalf("rebuild %v, err %v; want a rebuild", rebuild, err)
	}
	if g.Epoch() != "other" {
		t.Errorf("epoch: got %q, want the store's %q", g.Epoch(), "other")
	}
	if n, _ := rdb.Exists(ctx, ns+"v:veh-2").Result(); n != 1 {
		t.Error("another instance's data was wiped")
	}
}

// A store written before markers existed is adopted, not wiped.
func TestGuardAdoptsAStoreWithoutMarker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := redistest.Client(t)
	ns := redistest.Prefix(t, rdb) + "svc:"
	b := natstest.Bus(t)
	m, _ := storeguard.NewMetrics(nil)
	if err := rdb.Set(ctx, ns+"v:veh-1", "old", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cfg := storeguard.Config{Service: "svc", Namespace: ns, AllPartitions: true, Durables: []storeguard.Durable{{Stream: bus.TelemetryStream, Name: "svc-p00"}}}
	rebuild, err := storeguard.New(cfg, rdb, b, m, quiet()).Prepare(ctx)
	if err != nil || rebuild {
		t.Fatalf("rebuild %v, err %v; want the store adopted", rebuild, err)
	}
	if n, _ := rdb.Exists(ctx, ns+"v:veh-1", ns+"epoch").Result(); n != 2 {
		t.Errorf("after adoption %d of the data key and the marker exist, want 2", n)
	}
}
