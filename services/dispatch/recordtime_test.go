package dispatch

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// TestRecordTimeBounds: a record whose device time is too far from the time the stream
// stored it is counted by reason and kept from the detection rules, so it freezes nothing
// (the vehicle's next record is applied), while a device alarm it carries is still raised,
// as of the time it was stored; a record judged against the time it was stored is applied
// however long it waited in the stream for its consumer.
func TestRecordTimeBounds(t *testing.T) {
	b := natstest.Bus(t)
	now := time.Now().UTC().Truncate(time.Second)
	type step struct {
		device, stored time.Time
		alarm          bool // the record carries a PANIC alarm
		applied        bool // it became the state's newest record
	}
	tests := []struct {
		name   string
		steps  []step
		reason string // counted once
	}{
		{
			name: "PANIC dated 2100, then a live record",
			steps: []step{
				{device: now.Add(-time.Minute), stored: now.Add(-time.Minute), applied: true},
				{device: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), stored: now.Add(-30 * time.Second), alarm: true},
				{device: now, stored: now, applied: true},
			},
			reason: "future_time",
		},
		{
			// Behind the processing clock, but ahead of the time it was stored: the
			// clock is judged as it was when the record arrived.
			name: "ahead of its stored time, behind the clock",
			steps: []step{
				{device: now.Add(-50 * time.Minute), stored: now.Add(-time.Hour)},
				{device: now.Add(-59 * time.Minute), stored: now.Add(-59 * time.Minute), applied: true},
			},
			reason: "future_time",
		},
		{
			name: "PANIC older than the behind bound",
			steps: []step{
				{device: now.Add(-3 * time.Hour), stored: now.Add(-time.Minute), alarm: true},
				{device: now.Add(-time.Minute), stored: now.Add(-time.Minute), applied: true},
			},
			reason: "too_old",
		},
		{
			// A consumer starved (or stopped) for three hours, longer than the behind
			// bound: its records are as fresh as when they were stored.
			name: "PANIC delayed in the stream",
			steps: []step{
				{device: now.Add(-3*time.Hour - time.Second), stored: now.Add(-3 * time.Hour), alarm: true, applied: true},
				{device: now.Add(-3*time.Hour + 4*time.Minute), stored: now.Add(-3*time.Hour + time.Second), applied: true},
			},
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.RecordTime = telemetry.TimeBounds{MaxBehind: time.Hour}
			st := NewMemoryStore()
			s, err := New(cfg, b, st, testLog(), nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			v := fmt.Sprintf("veh-rt-%d", i)
			var wantAlerts []time.Time // FirstTime of each PANIC alert
			for j, stp := range tc.steps {
				r := telemetry.Record{VehicleID: v, DeviceTime: stp.device, Sequence: uint64(j + 1), Lat: 52.5, Lon: 13.4, FixValid: true, Satellites: 9}
				if stp.alarm {
					r.Alarms = []telemetry.AlarmKind{telemetry.AlarmPanic}
					if stp.applied {
						wantAlerts = append(wantAlerts, stp.device)
					} else {
						wantAlerts = append(wantAlerts, stp.stored)
					}
				}
				data, err := wire.EncodeBatch(v, stp.stored, []telemetry.Record{r})
				if err != nil {
					t.Fatal(err)
				}
				m := bus.Msg{Subject: bus.UpSubject(v, bus.KindTelemetry), Data: data, StreamSeq: uint64(j + 1), Time: stp.stored, Delivered: 1}
				if err := s.handleDevice(ctx, []bus.Msg{m}); err != nil {
					t.Fatalf("step %d: handle: %v (a refused record must not fail the batch)", j, err)
				}
				sts, err := st.GetVehicles(ctx, []string{v})
				if err != nil {
					t.Fatal(err)
				}
				got := sts[v].LastDeviceTime
				if applied := got.Equal(stp.device); applied != stp.applied {
					t.Errorf("step %d (device %s, stored %s): applied %v, want %v (state at %s)", j, stp.device, stp.stored, applied, stp.applied, got)
				}
				if !sts[v].LastReceived.Equal(stp.stored) && stp.stored.After(sts[v].LastReceived) {
					t.Errorf("step %d: last received %s, want %s (the record shows the tracker alive)", j, sts[v].LastReceived, stp.stored)
				}
			}
			alerts, err := st.ListAlerts(ctx, AlertFilter{Vehicle: v, Kind: telemetry.AlarmPanic.String(), Ascending: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(alerts) != len(wantAlerts) {
				t.Fatalf("got %d PANIC alerts, want %d", len(alerts), len(wantAlerts))
			}
			for i, a := range alerts {
				if !a.FirstTime.Equal(wantAlerts[i]) {
					t.Errorf("PANIC alert %d at %s, want %s", i, a.FirstTime, wantAlerts[i])
				}
			}
			for _, reason := range []string{"future_time", "too_old"} {
				want := 0.0
				if reason == tc.reason {
					want = 1
				}
				if got := s.rej.Count(reason); got != want {
					t.Errorf("rejected %s: got %v, want %v", reason, got, want)
				}
			}
		})
	}
}
