package loadtest

import (
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func pkt(v string, seq uint64, n int, at time.Duration) fleetsim.Packet {
	return fleetsim.Packet{Vehicle: v, Kind: "tele", Records: n, FirstSeq: seq, LastSeq: seq + uint64(n) - 1,
		Sent: t0.Add(at), DeviceTime: t0.Add(at)}
}

func TestLedgerMissingAndLatency(t *testing.T) {
	tests := []struct {
		name        string
		seen        map[string]uint64 // last sequence the dispatcher reported per vehicle
		wantMissing uint64
		wantVeh     int
	}{
		{"everything seen", map[string]uint64{"a": 10, "b": 24}, 0, 0},
		{"a's last two missing", map[string]uint64{"a": 8, "b": 24}, 2, 1},
		{"b never seen", map[string]uint64{"a": 10}, 5, 1},
		{"inside b's batch", map[string]uint64{"a": 10, "b": 21}, 3, 1},
		{"nothing seen", map[string]uint64{}, 15, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLedger(t0)
			for s := uint64(1); s <= 10; s++ { // a: 10 single-record packets, one per second
				l.published(pkt("a", s, 1, time.Duration(s)*time.Second))
			}
			l.published(pkt("b", 20, 5, 3*time.Second)) // b: one batch of 5 (seq 20..24)
			for v, seq := range tt.seen {
				at := t0.Add(12 * time.Second)
				if !l.observe(v, seq, at, at.Add(-2*time.Millisecond), at) {
					t.Fatalf("vehicle %s unknown to the ledger", v)
				}
			}
			got, veh := l.pending()
			if got != tt.wantMissing || veh != tt.wantVeh {
				t.Errorf("missing: got %d records of %d vehicles, want %d of %d", got, veh, tt.wantMissing, tt.wantVeh)
			}
			if want := uint64(15) - tt.wantMissing; l.delivered != want {
				t.Errorf("delivered: got %d, want %d", l.delivered, want)
			}
			if n := uint64(len(tt.seen)); l.lat.n != n || n > 0 && l.lat.quantile(1) != 2*time.Millisecond {
				t.Errorf("latency samples %d (max %v), want %d of 2ms", l.lat.n, l.lat.quantile(1), n)
			}
		})
	}
}

func TestLedgerIgnoresStaleAndForeignUpdates(t *testing.T) {
	l := newLedger(t0)
	for s := uint64(1); s <= 100; s++ {
		l.published(pkt("a", s, 1, time.Duration(s)*time.Second))
	}
	now := t0.Add(200 * time.Second)
	l.observe("a", 50, now, now, now)
	l.observe("a", 40, now, now, now) // an older state arriving late changes nothing
	if got, _ := l.pending(); got != 50 {
		t.Errorf("pending after stale update: got %d, want 50", got)
	}
	if l.updates != 1 {
		t.Errorf("updates: got %d, want 1", l.updates)
	}
	if l.observe("other", 1, now, now, now) {
		t.Error("update of a vehicle the ledger never published was accepted")
	}
	// Delivered packets are forgotten except a short tail.
	if n := len(l.vehicles["a"].pub); n != 50+eventTail {
		t.Errorf("kept %d packets, want %d", n, 50+eventTail)
	}
	// An event quoting a remembered record's device time gets a latency.
	if !l.event("tracking.status_changed", "a", t0.Add(45*time.Second), t0.Add(45*time.Second+3*time.Millisecond)) || l.evLat.n != 1 {
		t.Fatalf("event latency samples %d, want 1", l.evLat.n)
	}
	if got := l.evLat.quantile(0.5); got != 3*time.Millisecond {
		t.Errorf("event latency: got %v, want 3ms", got)
	}
}

func TestLedgerWithoutSequences(t *testing.T) {
	l := newLedger(t0)
	for s := uint64(1); s <= 10; s++ {
		l.published(pkt("a", s, 1, time.Duration(s)*time.Second))
	}
	// A dispatcher that reports only device times.
	at := t0.Add(7 * time.Second)
	l.observe("a", 0, at, at, at.Add(time.Millisecond))
	if got, _ := l.pending(); got != 3 {
		t.Errorf("pending: got %d, want 3", got)
	}
}

// Records without a send time (Teltonika) get their latency from when the device sent the
// record the update carries, found by its device time.
func TestLedgerLatencyWithoutSendTime(t *testing.T) {
	l := newLedger(t0)
	for s := 1; s <= 10; s++ {
		p := pkt("a", 0, 1, time.Duration(s)*time.Second)
		p.FirstSeq, p.LastSeq = 0, 0
		l.published(p)
	}
	dev := t0.Add(7 * time.Second)
	l.observe("a", 0, dev, time.Time{}, dev.Add(4*time.Millisecond))
	if l.lat.n != 1 || l.lat.quantile(1) != 4*time.Millisecond {
		t.Errorf("latency samples %d (max %v), want one of 4ms", l.lat.n, l.lat.quantile(1))
	}
	if got, _ := l.pending(); got != 3 {
		t.Errorf("pending: got %d, want 3", got)
	}
}
