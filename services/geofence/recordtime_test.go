package geofence

import (
	"context"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// storedMsg is a record message as the consumer hands it over: stored is the time the
// stream stored it, which a test cannot choose through a real publish.
func storedMsg(t *testing.T, seq uint64, r telemetry.Record, stored time.Time) bus.Msg {
	t.Helper()
	data, err := wire.EncodeBatch(r.VehicleID, stored, []telemetry.Record{r})
	if err != nil {
		t.Fatal(err)
	}
	return bus.Msg{Subject: bus.UpSubject(r.VehicleID, bus.KindTelemetry), Data: data, StreamSeq: seq, Time: stored, Delivered: 1}
}

// TestRecordTimeBounds: a record whose device time is too far from the time the stream
// stored it is refused, counted by reason and freezes nothing (the vehicle's next record
// is applied); a record judged against the time it was stored is applied however long it
// waited in the stream for its consumer.
func TestRecordTimeBounds(t *testing.T) {
	b := openBus(t)
	now := time.Now().UTC().Truncate(time.Second)
	type step struct {
		device, stored time.Time
		applied        bool
	}
	tests := []struct {
		name   string
		steps  []step
		reason string // counted once for the vehicle
	}{
		{
			name: "dated 2100, then a live record",
			steps: []step{
				{device: now.Add(-time.Minute), stored: now.Add(-time.Minute), applied: true},
				{device: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), stored: now.Add(-30 * time.Second)},
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
			name: "older than the behind bound",
			steps: []step{
				{device: now.Add(-3 * time.Hour), stored: now.Add(-time.Minute)},
				{device: now.Add(-time.Minute), stored: now.Add(-time.Minute), applied: true},
			},
			reason: "too_old",
		},
		{
			// A consumer starved (or stopped) for three hours, longer than the behind
			// bound: its records are as fresh as when they were stored.
			name: "delayed in the stream",
			steps: []step{
				{device: now.Add(-3*time.Hour - time.Second), stored: now.Add(-3 * time.Hour), applied: true},
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
			v := "rt-" + string(rune('a'+i))
			for j, stp := range tc.steps {
				before, err := st.Load(ctx, []string{v})
				if err != nil {
					t.Fatal(err)
				}
				m := storedMsg(t, uint64(j+1), rec(v, base, stp.device, 30), stp.stored)
				if err := s.handle(ctx, []bus.Msg{m}); err != nil {
					t.Fatalf("step %d: handle: %v (a refused record must not fail the batch)", j, err)
				}
				after, err := st.Load(ctx, []string{v})
				if err != nil {
					t.Fatal(err)
				}
				got := after[v].LastTime.Equal(stp.device)
				if got != stp.applied {
					t.Errorf("step %d (device %s, stored %s): applied %v, want %v", j, stp.device, stp.stored, got, stp.applied)
				}
				if !stp.applied && !after[v].LastTime.Equal(before[v].LastTime) {
					t.Errorf("step %d: a refused record moved the state to %s", j, after[v].LastTime)
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
