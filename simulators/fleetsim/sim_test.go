package fleetsim

import (
	"crypto/sha256"
	"fmt"
	"sort"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// recording keeps every packet the generator emits, decoded.
type recording struct {
	hash    [32]byte
	packets int
	records map[string][]telemetry.Record
	kinds   map[string]int
	raw     []emitted
	keepRaw bool
	t       *testing.T
}

type emitted struct {
	vehicle, kind string
	data          []byte
	recs          []sample
}

func newRecording(t *testing.T) *recording {
	return &recording{records: map[string][]telemetry.Record{}, kinds: map[string]int{}, t: t}
}

func (r *recording) emit(v *vehicle, kind string, data []byte, recs []sample) {
	h := sha256.New()
	h.Write(r.hash[:])
	fmt.Fprintf(h, "%s|%s|", v.id, kind)
	h.Write(data)
	copy(r.hash[:], h.Sum(nil))
	r.packets++
	r.kinds[kind]++
	if r.keepRaw {
		r.raw = append(r.raw, emitted{v.id, kind, append([]byte(nil), data...), append([]sample(nil), recs...)})
	}
	rs, bad, err := wire.DecodeBatch(v.id, data, false)
	if err != nil || len(bad) > 0 {
		r.t.Fatalf("generated packet does not decode: %v %v", err, bad)
	}
	r.records[v.id] = append(r.records[v.id], rs...)
}

var testStart = time.Date(2026, 3, 2, 5, 30, 0, 0, time.UTC) // 06:30 in Berlin

func play(t *testing.T, cfg Config, d time.Duration) (*Sim, *recording) {
	t.Helper()
	if cfg.Start.IsZero() {
		cfg.Start = testStart
	}
	s, err := NewSim(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecording(t)
	// Advance in uneven steps, as a wall-clock loop would.
	for at := time.Duration(0); at < d; at += 7300 * time.Millisecond {
		s.advance(s.Start().Add(at), rec)
	}
	s.advance(s.Start().Add(d), rec)
	return s, rec
}

func TestSameSeedSameRecords(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Vehicles = 30
	cfg.Scenarios = true
	cfg.Seed = 42
	_, a := play(t, cfg, 80*time.Minute)
	_, b := play(t, cfg, 80*time.Minute)
	if a.packets == 0 {
		t.Fatal("no packets generated")
	}
	if a.hash != b.hash || a.packets != b.packets {
		t.Errorf("same seed: %d packets (hash %x) vs %d (hash %x), want identical", a.packets, a.hash[:6], b.packets, b.hash[:6])
	}
	cfg.Seed = 43
	_, c := play(t, cfg, 80*time.Minute)
	if c.hash == a.hash {
		t.Error("different seeds produced identical records")
	}
}

func TestEncoderMatchesWire(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Vehicles = 10
	cfg.Scenarios = true
	cfg.BatchRecords = 4
	s, err := NewSim(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecording(t)
	rec.keepRaw = true
	s.advance(s.Start().Add(time.Hour), rec)
	if len(rec.raw) == 0 {
		t.Fatal("no packets")
	}
	for _, p := range rec.raw[:min(len(rec.raw), 300)] {
		want := make([]telemetry.Record, len(p.recs))
		for i := range p.recs {
			want[i] = p.recs[i].toRecord(p.vehicle)
		}
		var got, exp fleetv1.TelemetryBatch
		if err := proto.Unmarshal(p.data, &got); err != nil {
			t.Fatal(err)
		}
		wb, err := wire.EncodeBatch(p.vehicle, got.GetSentTime().AsTime(), want)
		if err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(wb, &exp); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, &exp) {
			t.Fatalf("encoder output differs from wire.EncodeBatch:\n got %v\nwant %v", &got, &exp)
		}
	}
}

func TestFleetIsPlausible(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Vehicles = 40
	s, rec := play(t, cfg, 12*time.Hour)
	var moving, invalid, total, refuels, ignitionOn, faults int
	for id, rs := range rec.records {
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].DeviceTime.Before(rs[j].DeviceTime) })
		checkNoJumps(t, id, rs)
		var prev *telemetry.Record
		for i := range rs {
			r := &rs[i]
			total++
			if r.SpeedKmh > 0 {
				moving++
			}
			if !r.FixValid {
				invalid++
			}
			if r.SpeedKmh > 135 || r.SpeedKmh < 0 {
				t.Fatalf("%s: speed %v km/h", id, r.SpeedKmh)
			}
			if r.FuelPercent < 0 || r.FuelPercent > 100 {
				t.Fatalf("%s: fuel %v%%", id, r.FuelPercent)
			}
			if r.FixValid {
				p := geo.Point{Lat: r.Lat, Lon: r.Lon}
				if d := geo.DistanceM(p, s.cfg.Center); d > ZoneRadiusM+100 {
					t.Fatalf("%s: %0.f m from the centre, outside the service area", id, d)
				}
			}
			if prev != nil {
				if r.FuelLitres-prev.FuelLitres > 15 && r.SpeedKmh == 0 && !r.Ignition {
					refuels++
				}
				if r.Ignition && !prev.Ignition {
					ignitionOn++
				}
				if len(r.FaultCodes) > 0 && len(prev.FaultCodes) == 0 {
					faults++
				}
			}
			if prev != nil && r.Sequence > prev.Sequence && r.DeviceTime.After(prev.DeviceTime) {
				if r.OdometerM < prev.OdometerM || r.EngineHours < prev.EngineHours {
					t.Fatalf("%s: counters went back: odometer %v→%v, hours %v→%v", id, prev.OdometerM, r.OdometerM, prev.EngineHours, r.EngineHours)
				}
				dt := r.DeviceTime.Sub(prev.DeviceTime).Hours()
				if km := (r.OdometerM - prev.OdometerM) / 1000; km > 135*dt+0.05 {
					t.Fatalf("%s: %.2f km in %.4f h", id, km, dt)
				}
			}
			prev = r
		}
	}
	if total == 0 || moving < total/10 {
		t.Errorf("%d of %d records moving, want at least 10%%", moving, total)
	}
	if invalid == 0 || invalid > total/20 {
		t.Errorf("%d of %d records without a fix, want a few", invalid, total)
	}
	if s.counts.lateBatches == 0 {
		t.Error("no late batch from a tunnel in 12 hours")
	}
	if s.counts.duplicates == 0 {
		t.Error("no duplicate packet in 12 hours")
	}
	if refuels == 0 || ignitionOn < cfg.Vehicles || faults == 0 {
		t.Errorf("in 12 hours: %d refuels, %d ignition cycles, %d new fault codes; want some of each, and a cycle per vehicle", refuels, ignitionOn, faults)
	}
}

// checkNoJumps fails when consecutive fixes (rs in device-time order) lie farther apart
// than the top speed allows.
func checkNoJumps(t *testing.T, id string, rs []telemetry.Record) {
	t.Helper()
	var prev *telemetry.Record
	for i := range rs {
		r := &rs[i]
		if !r.FixValid {
			continue
		}
		if prev != nil {
			d := geo.DistanceM(geo.Point{Lat: prev.Lat, Lon: prev.Lon}, geo.Point{Lat: r.Lat, Lon: r.Lon})
			dt := r.DeviceTime.Sub(prev.DeviceTime).Seconds()
			if d > 40+dt*135/3.6 {
				t.Fatalf("%s: jumped %.0f m in %.0f s at %s", id, d, dt, r.DeviceTime)
			}
		}
		prev = r
	}
}

func TestFixedIntervalRate(t *testing.T) {
	tests := []struct {
		interval time.Duration
		vehicles int
	}{
		{time.Second, 10},
		{1500 * time.Millisecond, 10},
		{250 * time.Millisecond, 10},
		{7 * time.Second, 50},
	}
	for _, tt := range tests {
		t.Run(tt.interval.String(), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Vehicles = tt.vehicles
			cfg.FixedInterval = tt.interval
			cfg.DuplicateProb = 0
			cfg.Tunnels = false
			_, rec := play(t, cfg, 2*time.Minute)
			got := 0
			for _, rs := range rec.records {
				got += len(rs)
			}
			want := float64(tt.vehicles) * (2 * time.Minute).Seconds() / tt.interval.Seconds()
			if float64(got) < want-float64(tt.vehicles) || float64(got) > want+float64(tt.vehicles) {
				t.Errorf("got %d records, want %.0f ± %d", got, want, tt.vehicles)
			}
		})
	}
}
