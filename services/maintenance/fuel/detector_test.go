package fuel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"
)

var base = time.Date(2026, 4, 1, 6, 0, 0, 0, time.UTC)

// script builds readings: each step is a duration with a speed, ignition and a level
// function of the minute within the step.
type step struct {
	n     int           // readings
	every time.Duration // between readings
	speed float64
	ign   bool
	level func(i int) float64
}

func build(steps ...step) []Reading {
	var out []Reading
	t := base
	for _, s := range steps {
		for i := 0; i < s.n; i++ {
			t = t.Add(s.every)
			out = append(out, Reading{Time: t, Level: s.level(i), HasLevel: true, SpeedKmh: s.speed, Ignition: s.ign, HasIgnition: true, Lat: 45, Lon: 9, HasPosition: true})
		}
	}
	return out
}

func flat(l float64) func(int) float64 { return func(int) float64 { return l } }

func ramp(from, perReading, to float64) func(int) float64 {
	return func(i int) float64 {
		v := from + perReading*float64(i+1)
		if perReading > 0 {
			return math.Min(v, to)
		}
		return math.Max(v, to)
	}
}

func TestDetector(t *testing.T) {
	slosh := func(l float64) func(int) float64 {
		return func(i int) float64 { return l + 12*math.Sin(float64(i)*1.9) - 0.05*float64(i) }
	}
	tests := []struct {
		name  string
		cfg   func(*Config)
		rs    []Reading
		want  []Kind
		litre []float64
	}{
		{name: "steady level", rs: build(step{60, time.Minute, 0, false, flat(80)}), want: nil},
		{name: "refuel while stopped", rs: build(
			step{10, time.Minute, 0, false, flat(40)},
			step{5, time.Minute, 0, false, ramp(40, 30, 190)},
			step{20, time.Minute, 0, false, flat(190)},
		), want: []Kind{KindRefuel}, litre: []float64{150}},
		{name: "slosh while driving is no drain", rs: build(
			step{10, time.Minute, 0, true, flat(120)},
			step{240, 30 * time.Second, 70, true, slosh(120)},
			step{10, time.Minute, 0, false, flat(108)},
		), want: nil},
		{name: "drain while parked", rs: build(
			step{20, 5 * time.Minute, 0, false, flat(150)},
			step{4, 5 * time.Minute, 0, false, ramp(150, -10, 110)},
			step{20, 5 * time.Minute, 0, false, flat(110)},
		), want: []Kind{KindDrain}, litre: []float64{40}},
		{name: "idle burn explains the fall", rs: build(
			// Three hours idling at 1.5 L/h: 4.5 L gone, expected.
			step{180, time.Minute, 0, true, func(i int) float64 { return 100 - 0.025*float64(i) }},
		), want: nil},
		{name: "drain below the minimum volume", rs: build(
			step{20, time.Minute, 0, false, flat(150)},
			step{2, time.Minute, 0, false, ramp(150, -3, 144)},
			step{20, time.Minute, 0, false, flat(144)},
		), want: nil},
		{name: "refuel paused to switch pumps is one refuel", rs: build(
			step{10, time.Minute, 0, false, flat(20)},
			step{3, time.Minute, 0, false, ramp(20, 25, 95)},
			step{5, time.Minute, 0, false, flat(95)},
			step{3, time.Minute, 0, false, ramp(95, 25, 170)},
			step{20, time.Minute, 0, false, flat(170)},
		), want: []Kind{KindRefuel}, litre: []float64{150}},
		{name: "refuel while moving ignored by default", rs: build(
			step{10, time.Minute, 0, false, flat(40)},
			step{40, 30 * time.Second, 60, true, func(i int) float64 {
				if i < 20 {
					return 40
				}
				return 100
			}},
			step{10, time.Minute, 0, false, flat(100)},
		), want: nil},
		{name: "refuel while moving when enabled", cfg: func(c *Config) { c.RefuelWhileMoving = true }, rs: build(
			step{10, time.Minute, 0, false, flat(40)},
			step{40, 30 * time.Second, 60, true, func(i int) float64 {
				if i < 20 {
					return 40
				}
				return 100
			}},
			step{10, time.Minute, 0, false, flat(100)},
		), want: []Kind{KindRefuel}, litre: []float64{60}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			evs := runDetector(cfg, 200, tc.rs)
			var got []Kind
			for _, e := range evs {
				got = append(got, e.Kind)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("events: got %v (%+v), want %v", got, evs, tc.want)
			}
			for i, l := range tc.litre {
				if math.Abs(evs[i].Litres-l) > math.Max(2, 0.05*l) {
					t.Errorf("event %d litres: got %.1f, want %.1f", i, evs[i].Litres, l)
				}
			}
		})
	}
}

func TestDetectorRejects(t *testing.T) {
	var st State
	d := NewDetector(DefaultConfig(), Profile{CapacityL: 100}, &st)
	if _, err := d.Add(Reading{Time: base, Level: 50, HasLevel: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Add(Reading{Time: base, Level: 50, HasLevel: true}); !errors.Is(err, ErrStale) {
		t.Fatalf("same time again: got %v, want ErrStale", err)
	}
	if _, err := d.Add(Reading{Time: base.Add(-time.Minute), Level: 50, HasLevel: true}); !errors.Is(err, ErrStale) {
		t.Fatalf("older reading: got %v, want ErrStale", err)
	}
	for i, l := range []float64{-1, 106, math.NaN()} {
		_, err := d.Add(Reading{Time: base.Add(time.Duration(i+1) * time.Minute), Level: l, HasLevel: true, OdometerM: float64(i), HasOdometer: true})
		if !errors.Is(err, ErrLevelRange) {
			t.Fatalf("level %v: got %v, want ErrLevelRange", l, err)
		}
	}
	if !st.HasOdo || st.LastOdoM != 2 {
		t.Fatalf("rest of a reading with a bad level: got odometer %v (%v), want 2 (used)", st.LastOdoM, st.HasOdo)
	}
	if l, err := CheckLevel(DefaultConfig(), Profile{CapacityL: 100}, 104); err != nil || l != 100 {
		t.Fatalf("level within the tolerance: got %v, %v; want clamped to 100", l, err)
	}
}

// TestDetectorResumes: a detector whose state goes through JSON between every reading
// (as a restarted service's would) reports exactly what an uninterrupted one does.
func TestDetectorResumes(t *testing.T) {
	tr := simulateVehicle(7, 3)
	cfg := DefaultConfig()
	want := runDetector(cfg, tr.capL, tr.readings)
	var got []Event
	var st State
	for _, r := range tr.readings {
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st = State{}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		evs, _ := NewDetector(cfg, Profile{CapacityL: tr.capL}, &st).Add(r)
		got = append(got, evs...)
	}
	if st.Pending != nil {
		got = append(got, *st.Pending)
	}
	if len(want) == 0 || !reflect.DeepEqual(got, want) {
		t.Fatalf("resumed detector: got %d events, want %d identical ones", len(got), len(want))
	}
}

func TestProfile(t *testing.T) {
	p, err := Profile{CapacityL: 100, Calibration: []CalPoint{{Raw: 4000, Litres: 100}, {Raw: 0, Litres: 0}, {Raw: 1000, Litres: 10}}}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ raw, want float64 }{{-5, 0}, {0, 0}, {500, 5}, {1000, 10}, {2500, 55}, {4000, 100}, {9000, 100}} {
		if got := p.Litres(tc.raw); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Litres(%v): got %v, want %v", tc.raw, got, tc.want)
		}
	}
	if p.SensorKey != DefaultSensorKey {
		t.Errorf("sensor key: got %q, want %q", p.SensorKey, DefaultSensorKey)
	}
	bad := []Profile{
		{CapacityL: -1},
		{CapacityL: math.NaN()},
		{CapacityL: 100, Calibration: []CalPoint{{Raw: 1, Litres: 1}}},
		{CapacityL: 100, Calibration: []CalPoint{{Raw: 1, Litres: 1}, {Raw: 1, Litres: 2}}},
		{CapacityL: 100, Calibration: []CalPoint{{Raw: 1, Litres: 50}, {Raw: 2, Litres: 40}}},
		{CapacityL: 100, Calibration: []CalPoint{{Raw: 1, Litres: 50}, {Raw: 2, Litres: 400}}},
	}
	for i, b := range bad {
		if _, err := b.Normalize(); err == nil {
			t.Errorf("bad profile %d: got no error", i)
		}
	}
}

// FuzzDetector feeds arbitrary reading sequences: the detector never panics and every
// event it reports is consistent.
func FuzzDetector(f *testing.F) {
	f.Add([]byte{0, 10, 50, 0, 1, 10, 200, 0, 2, 10, 200, 0})
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		var st State
		capL := 150.0
		d := NewDetector(DefaultConfig(), Profile{CapacityL: capL}, &st)
		tm := base
		for len(data) >= 4 {
			rec := data[:4]
			data = data[4:]
			tm = tm.Add(time.Duration(binary.BigEndian.Uint16(rec[:2])%900) * time.Second)
			r := Reading{Time: tm, Level: float64(rec[2]) * 0.7, HasLevel: rec[3]&1 == 0, SpeedKmh: float64(rec[3] >> 2), Ignition: rec[3]&2 != 0, HasIgnition: true}
			evs, err := d.Add(r)
			if err != nil && !errors.Is(err, ErrStale) && !errors.Is(err, ErrLevelRange) {
				t.Fatalf("unexpected error %v", err)
			}
			for _, e := range evs {
				if e.Kind != KindRefuel && e.Kind != KindDrain || !(e.Litres > 0) || e.End.Before(e.Start) {
					t.Fatalf("inconsistent event %+v", e)
				}
				if e.Before < 0 || e.After < 0 || e.Before > capL || e.After > capL {
					t.Fatalf("level outside the tank in %+v", e)
				}
			}
		}
	})
}
