package dispatch

import (
	"context"
	"strings"
	"testing"
	"time"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

// TestSimulatedTowing drives the service with the fleet simulator: its scripted towing
// incident (ignition off, towed at truck speed, TOW alarm) must give one tow alert
// within 5 s (device time) of the tow's start; an IMMOBILIZE sent during the tow is
// executed by the simulated tracker, and RESUME restores it.
func TestSimulatedTowing(t *testing.T) {
	if testing.Short() {
		t.Skip("simulated scenario")
	}
	h := newHarness(t, NewMemoryStore())
	cfg := fleetsim.DefaultConfig()
	cfg.Vehicles, cfg.Seed, cfg.Scenarios = 7, 3, true
	cfg.Start = time.Now().Add(-3 * time.Hour).UTC() // device time stays behind the wall clock
	cfg.Speedup = 90
	cfg.ScenarioStart, cfg.ScenarioEvery = time.Minute, 11*time.Minute // towing at 12 min simulated
	cfg.InvalidFixProb, cfg.DuplicateProb = 0, 0
	fleet, err := fleetsim.New(cfg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	var tow fleetsim.Incident
	for _, inc := range fleet.Sim().GroundTruth().Incidents {
		if inc.Kind == fleetsim.IncidentTowing {
			tow = inc
		}
	}
	if tow.Vehicle == "" {
		t.Fatal("the simulator scheduled no towing incident")
	}
	ctx, cancel := context.WithCancel(context.Background())
	simDone := make(chan struct{})
	go func() {
		defer close(simDone)
		if err := fleet.Run(ctx, h.b.Conn()); err != nil {
			t.Errorf("simulator: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-simDone })

	wait := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var alerts []*fleetv1.Alert
	wait("tow alert for "+tow.Vehicle, 90*time.Second, func() bool {
		alerts = h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: tow.Vehicle, Kind: KindTow})
		return len(alerts) > 0
	})
	if lag := alerts[0].GetFirstTime().AsTime().Sub(tow.Start); lag < -time.Second || lag > 5*time.Second {
		t.Fatalf("tow alert at %s, tow started %s: got %s after the start, want within 5 s", alerts[0].GetFirstTime().AsTime(), tow.Start, lag)
	}

	// Immobilise while it is towed at speed.
	wait("the towed vehicle to move faster than 5 km/h", 60*time.Second, func() bool {
		v, ok, err := h.st.GetVehicle(context.Background(), tow.Vehicle)
		return err == nil && ok && v.SpeedKmh > 10
	})
	resp, err := h.cmds.SendCommand(h.ctx(), &fleetv1.SendCommandRequest{VehicleId: tow.Vehicle, Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE, Who: "dispatcher"})
	if err != nil {
		t.Fatal(err)
	}
	imm := resp.GetCommand()
	t.Logf("IMMOBILIZE during the tow: %s %q", imm.GetState(), imm.GetStateReason())
	if imm.GetState() == fleetv1.CommandState_COMMAND_STATE_QUEUED && !strings.Contains(imm.GetStateReason(), "waiting for speed") {
		t.Fatalf("immobilize queued for the wrong reason: %q", imm.GetStateReason())
	}
	var done *fleetv1.Command
	wait("IMMOBILIZE executed", 90*time.Second, func() bool {
		r, err := h.cmds.GetCommand(h.ctx(), &fleetv1.GetCommandRequest{CommandId: imm.GetCommandId()})
		if err != nil {
			t.Fatal(err)
		}
		done = r.GetCommand()
		return done.GetState() == fleetv1.CommandState_COMMAND_STATE_EXECUTED
	})
	if len(done.GetHistory()) < 3 {
		t.Fatalf("history: got %v, want queued, sent, ..., executed", done.GetHistory())
	}

	resp, err = h.cmds.SendCommand(h.ctx(), &fleetv1.SendCommandRequest{VehicleId: tow.Vehicle, Kind: fleetv1.CommandKind_COMMAND_KIND_RESUME, Who: "dispatcher"})
	if err != nil {
		t.Fatal(err)
	}
	wait("RESUME executed", 60*time.Second, func() bool {
		r, err := h.cmds.GetCommand(h.ctx(), &fleetv1.GetCommandRequest{CommandId: resp.GetCommand().GetCommandId()})
		return err == nil && r.GetCommand().GetState() == fleetv1.CommandState_COMMAND_STATE_EXECUTED
	})
	if got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: tow.Vehicle, Kind: KindTow}); len(got) != 1 {
		t.Fatalf("tow alerts for the whole incident: got %d, want 1", len(got))
	}
}
