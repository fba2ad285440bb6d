package fleetsim

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func testFleet(t testing.TB) *Fleet {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Vehicles = 3
	cfg.Start = testStart
	f, err := New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	f.sim.advance(testStart.Add(10*time.Minute), &discard{})
	return f
}

func TestCommandReplies(t *testing.T) {
	f := testFleet(t)
	v := f.sim.vehicles[0]
	expired := timestamppb.New(testStart)
	fast, limit := 26/3.6, 5.0
	tests := []struct {
		name  string
		cmd   *fleetv1.DeviceCommand
		want  []fleetv1.CommandReplyStatus
		speed float64 // m/s
	}{
		{"immobilize at 26 km/h: the tracker's own check refuses", &fleetv1.DeviceCommand{CommandId: "0", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE, MaxSpeedKmh: &limit}, []fleetv1.CommandReplyStatus{2}, fast},
		{"immobilize at 26 km/h without a limit: the tracker's default refuses", &fleetv1.DeviceCommand{CommandId: "0b", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE}, []fleetv1.CommandReplyStatus{2}, fast},
		{"immobilize", &fleetv1.DeviceCommand{CommandId: "1", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE, MaxSpeedKmh: &limit}, []fleetv1.CommandReplyStatus{1, 3}, 0},
		{"resume", &fleetv1.DeviceCommand{CommandId: "2", Kind: fleetv1.CommandKind_COMMAND_KIND_RESUME}, []fleetv1.CommandReplyStatus{1, 3}, 0},
		{"interval", &fleetv1.DeviceCommand{CommandId: "3", Kind: fleetv1.CommandKind_COMMAND_KIND_SET_REPORT_INTERVAL, Params: map[string]string{"moving_s": "10", "parked_s": "600"}}, []fleetv1.CommandReplyStatus{1, 3}, 0},
		{"interval without params", &fleetv1.DeviceCommand{CommandId: "4", Kind: fleetv1.CommandKind_COMMAND_KIND_SET_REPORT_INTERVAL}, []fleetv1.CommandReplyStatus{2}, 0},
		{"interval out of range", &fleetv1.DeviceCommand{CommandId: "5", Kind: fleetv1.CommandKind_COMMAND_KIND_SET_REPORT_INTERVAL, Params: map[string]string{"moving_s": "0"}}, []fleetv1.CommandReplyStatus{2}, 0},
		{"expired", &fleetv1.DeviceCommand{CommandId: "6", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE, ExpireTime: expired}, []fleetv1.CommandReplyStatus{2}, 0},
		{"unspecified", &fleetv1.DeviceCommand{CommandId: "7"}, []fleetv1.CommandReplyStatus{2}, 0},
		{"no id", &fleetv1.DeviceCommand{Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW}, []fleetv1.CommandReplyStatus{2}, 0},
		{"repeated interval id answered again", &fleetv1.DeviceCommand{CommandId: "3", Kind: fleetv1.CommandKind_COMMAND_KIND_SET_REPORT_INTERVAL, Params: map[string]string{"moving_s": "99"}}, []fleetv1.CommandReplyStatus{1, 3}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v.speed = tt.speed
			data, _ := proto.Marshal(tt.cmd)
			replies, err := f.handleCommand("fleet.down."+v.id+".cmd", data, &discard{})
			if err != nil {
				t.Fatal(err)
			}
			var got []fleetv1.CommandReplyStatus
			for _, r := range replies {
				got = append(got, r.GetStatus())
				if tt.cmd.GetKind() == fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE && tt.cmd.GetCommandId() != "6" && r.SpeedKmh == nil {
					t.Errorf("IMMOBILIZE reply %v without the tracker's speed", r.GetStatus())
				}
				if r.GetVehicleId() != v.id || r.GetCommandId() != tt.cmd.GetCommandId() {
					t.Errorf("reply for %s/%s, want %s/%s", r.GetVehicleId(), r.GetCommandId(), v.id, tt.cmd.GetCommandId())
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got replies %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got replies %v, want %v", got, tt.want)
				}
			}
		})
	}
	// The repeated id did not execute again: the interval is still the first one.
	if v.movingIv != 10 || v.parkedIv != 600 {
		t.Errorf("intervals %v/%v s, want 10/600 (the repeat of command 3 must not execute)", v.movingIv, v.parkedIv)
	}
	if v.immobilized {
		t.Error("still immobilised after RESUME; the expired IMMOBILIZE must not execute")
	}
	// A vehicle of another fleet is not answered.
	data, _ := proto.Marshal(&fleetv1.DeviceCommand{CommandId: "x", Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW})
	if replies, err := f.handleCommand("fleet.down.other-1.cmd", data, &discard{}); err != nil || replies != nil {
		t.Errorf("foreign vehicle: got %v, %v; want no replies", replies, err)
	}
}

// FuzzCommand feeds arbitrary payloads to the command handler: it must never panic,
// must answer a decodable command for its vehicle, and must answer a repeat the same way.
func FuzzCommand(f *testing.F) {
	for _, c := range []*fleetv1.DeviceCommand{
		{CommandId: "a", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE},
		{CommandId: "b", Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW, ExpireTime: timestamppb.New(testStart.Add(time.Hour))},
		{CommandId: "c", Kind: fleetv1.CommandKind_COMMAND_KIND_SET_REPORT_INTERVAL, Params: map[string]string{"moving_s": "1e3", "parked_s": "NaN"}},
		{CommandId: "d", Kind: 99},
	} {
		data, _ := proto.Marshal(c)
		f.Add(data)
	}
	f.Add([]byte{0xff, 0x01})
	fleet := testFleet(f)
	subject := "fleet.down." + fleet.sim.vehicles[1].id + ".cmd"
	f.Fuzz(func(t *testing.T, data []byte) {
		first, err := fleet.handleCommand(subject, data, &discard{})
		if err != nil {
			return
		}
		if len(first) == 0 {
			t.Fatal("decodable command for our vehicle got no reply")
		}
		again, err := fleet.handleCommand(subject, data, &discard{})
		if err != nil || len(again) != len(first) {
			t.Fatalf("repeat: %d replies (%v), first time %d", len(again), err, len(first))
		}
		for i := range first {
			if first[i].GetStatus() != again[i].GetStatus() {
				t.Fatalf("repeat answered %v, first time %v", again[i].GetStatus(), first[i].GetStatus())
			}
		}
	})
}
