package maintenance

import (
	"context"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// TestRecordTimeBounds: a record whose device time is too far from the time the stream
// stored it is refused, counted by reason and freezes nothing (the vehicle's next record
// of the same clock is applied); a record judged against the time it was stored is
// applied however long it waited in the stream for its consumer.
func TestRecordTimeBounds(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	type step struct {
		kind           string
		device, stored time.Time
		applied        bool
	}
	tele, alarm := bus.KindTelemetry, bus.KindAlarm
	tests := []struct {
		name   string
		steps  []step
		reason string // counted once
	}{
		{
			name: "telemetry dated 2100, then a live record",
			steps: []step{
				{kind: tele, device: now.Add(-time.Minute), stored: now.Add(-time.Minute), applied: true},
				{kind: tele, device: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), stored: now.Add(-30 * time.Second)},
				{kind: tele, device: now, stored: now, applied: true},
			},
			reason: "future_time",
		},
		{
			name: "alarm dated 2100, then a live alarm",
			steps: []step{
				{kind: alarm, device: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), stored: now.Add(-30 * time.Second)},
				{kind: alarm, device: now, stored: now, applied: true},
			},
			reason: "future_time",
		},
		{
			// Behind the processing clock, but ahead of the time it was stored: the
			// clock is judged as it was when the record arrived.
			name: "ahead of its stored time, behind the clock",
			steps: []step{
				{kind: tele, device: now.Add(-50 * time.Minute), stored: now.Add(-time.Hour)},
				{kind: tele, device: now.Add(-59 * time.Minute), stored: now.Add(-59 * time.Minute), applied: true},
			},
			reason: "future_time",
		},
		{
			name: "older than the behind bound",
			steps: []step{
				{kind: tele, device: now.Add(-3 * time.Hour), stored: now.Add(-time.Minute)},
				{kind: tele, device: now.Add(-time.Minute), stored: now.Add(-time.Minute), applied: true},
			},
			reason: "too_old",
		},
		{
			// A consumer starved (or stopped) for three hours, longer than the behind
			// bound: its records are as fresh as when they were stored.
			name: "delayed in the stream",
			steps: []step{
				{kind: tele, device: now.Add(-3*time.Hour - time.Second), stored: now.Add(-3 * time.Hour), applied: true},
				{kind: tele, device: now.Add(-3*time.Hour + 4*time.Minute), stored: now.Add(-3*time.Hour + time.Second), applied: true},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.RecordTime = telemetry.TimeBounds{MaxBehind: time.Hour}
			s := newTestService(t, cfg)
			ctx := context.Background()
			const v = "V1"
			for j, stp := range tc.steps {
				data, err := wire.EncodeBatch(v, stp.stored, []telemetry.Record{rec(v, stp.device, odo(1000+float64(j)))})
				if err != nil {
					t.Fatal(err)
				}
				m := bus.Msg{Subject: bus.UpSubject(v, stp.kind), Data: data, StreamSeq: uint64(j + 1), Time: stp.stored, Delivered: 1}
				if err := s.handle(ctx, []bus.Msg{m}); err != nil {
					t.Fatalf("step %d: handle: %v (a refused record must not fail the batch)", j, err)
				}
				sts, err := s.st.GetVehicles(ctx, []string{v})
				if err != nil {
					t.Fatal(err)
				}
				var got time.Time
				if st := sts[v]; st != nil {
					got = st.LastTime
					if stp.kind != tele {
						got = st.SideTime
					}
				}
				if applied := got.Equal(stp.device); applied != stp.applied {
					t.Errorf("step %d (%s, device %s, stored %s): applied %v, want %v (state at %s)", j, stp.kind, stp.device, stp.stored, applied, stp.applied, got)
				}
			}
			for _, reason := range []string{"future_time", "too_old"} {
				want := 0.0
				if reason == tc.reason {
					want = 1
				}
				if got := s.Rejects().Count(reason); got != want {
					t.Errorf("rejected %s: got %v, want %v", reason, got, want)
				}
			}
		})
	}
}
