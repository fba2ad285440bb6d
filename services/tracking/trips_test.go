package tracking

import (
	"math"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

// leg is a stretch of a synthetic day: constant speed on a constant bearing, one fix
// every `every` (none when silent).
type leg struct {
	dur     time.Duration
	kmh     float64
	bearing float64
	every   time.Duration
	ign     bool
	silent  bool
}

func synthDay(start time.Time, p geo.Point, legs []leg) []Fix {
	var out []Fix
	seq := uint64(0)
	emit := func(at time.Time, q geo.Point, kmh float64, ign bool) {
		seq++
		i := int8(-1)
		if ign {
			i = 1
		}
		out = append(out, Fix{Time: at, Seq: seq, Lat: q.Lat, Lon: q.Lon, SpeedKmh: kmh, Ignition: i})
	}
	emit(start, p, 0, false)
	t := start
	for _, l := range legs {
		for dt := l.every; dt <= l.dur; dt += l.every {
			if !l.silent {
				emit(t.Add(dt), geo.Destination(p, l.bearing, l.kmh/3.6*dt.Seconds()), l.kmh, l.ign)
			}
		}
		p = geo.Destination(p, l.bearing, l.kmh/3.6*l.dur.Seconds())
		t = t.Add(l.dur)
	}
	return out
}

func TestSegmentSyntheticDay(t *testing.T) {
	const (
		east, north, west, south = 90, 0, 270, 180
		s10, m5                  = 10 * time.Second, 5 * time.Minute
	)
	park := func(d time.Duration) leg { return leg{dur: d, every: m5} }
	ignOn := leg{dur: time.Second, every: time.Second, ign: true} // the fix a tracker sends at ignition on
	drive := func(d time.Duration, kmh, bearing float64) leg {
		return leg{dur: d, kmh: kmh, bearing: bearing, every: s10, ign: true}
	}
	midnight := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	legs := []leg{
		park(7 * time.Hour),
		// Trip 1: 20 km east with a 60 s red light and a 2 min tunnel (no fixes).
		ignOn,
		drive(10*time.Minute, 40, east),
		{dur: time.Minute, every: s10, ign: true}, // red light
		drive(10*time.Minute, 40, east),
		{dur: 2 * time.Minute, kmh: 40, bearing: east, every: s10, silent: true},
		drive(8*time.Minute, 40, east),
		park(4*time.Hour + 30*time.Minute),
		// Trip 2: 45 km north.
		ignOn,
		drive(45*time.Minute, 60, north),
		park(15 * time.Minute),
		{dur: 2 * time.Hour, every: m5, silent: true}, // tracker silent while parked
		// Trip 3: 10 km west, then coverage is lost while still driving (70 min, 35 km).
		ignOn,
		drive(20*time.Minute, 30, west),
		{dur: 70 * time.Minute, kmh: 30, bearing: west, every: s10, silent: true},
		park(30 * time.Minute),
		// Trip 4: 10 km south, then parked for the night with a 50 m manoeuvre.
		ignOn,
		drive(15*time.Minute, 40, south),
		park(time.Hour),
		{dur: 36 * time.Second, kmh: 5, bearing: east, every: 12 * time.Second, ign: true},
		park(2 * time.Hour),
	}
	fixes := synthDay(midnight, geo.Point{Lat: 48.1, Lon: 11.5}, legs)
	trips, stops := Segment(fixes, DefaultTripConfig())

	want := []struct {
		distM float64
		start time.Time
		idle  time.Duration
	}{
		// Idle: the red light plus the 10 s between ignition on and driving off.
		{20_000, midnight.Add(7*time.Hour + time.Second), 70 * time.Second},
		{45_000, midnight.Add(12*time.Hour + time.Minute + 2*time.Second), s10},
		{10_000, midnight.Add(15*time.Hour + time.Minute + 3*time.Second), s10},
		{10_000, midnight.Add(17*time.Hour + time.Minute + 4*time.Second), s10},
	}
	if len(trips) != len(want) {
		for _, tr := range trips {
			t.Logf("trip %v → %v %.0f m", tr.Start.Time.Format("15:04:05"), tr.End.Time.Format("15:04:05"), tr.DistanceM)
		}
		t.Fatalf("got %d trips, want %d", len(trips), len(want))
	}
	for i, w := range want {
		tr := trips[i]
		if math.Abs(tr.DistanceM-w.distM)/w.distM > 0.01 {
			t.Errorf("trip %d: got %.0f m, want %.0f m ±1%%", i+1, tr.DistanceM, w.distM)
		}
		// Starts are within one fix interval of the ignition-on fix.
		if d := tr.Start.Time.Sub(w.start); d < -s10 || d > s10 {
			t.Errorf("trip %d: got start %v, want %v", i+1, tr.Start.Time.Format("15:04:05"), w.start.Format("15:04:05"))
		}
		if tr.IdleDuration != w.idle {
			t.Errorf("trip %d: got idle %v, want %v", i+1, tr.IdleDuration, w.idle)
		}
		if tr.MaxSpeedKmh <= 0 || tr.AvgSpeedKmh <= 0 || tr.AvgSpeedKmh > tr.MaxSpeedKmh {
			t.Errorf("trip %d: got max %.1f avg %.1f km/h", i+1, tr.MaxSpeedKmh, tr.AvgSpeedKmh)
		}
	}
	// Stops: the night, B, C with the silent tracker, the lost coverage, and the evening
	// (the manoeuvre is not a trip, so the evening is one stop).
	if len(stops) != 5 {
		for _, s := range stops {
			t.Logf("stop %v → %v gap=%v", s.Start.Format("15:04:05"), s.End.Format("15:04:05"), s.DataGap)
		}
		t.Fatalf("got %d stops, want 5", len(stops))
	}
	wantGap := []bool{false, false, true, true, false}
	for i, s := range stops {
		if s.DataGap != wantGap[i] {
			t.Errorf("stop %d: got data gap %v, want %v", i+1, s.DataGap, wantGap[i])
		}
	}
	if d := stops[4].Duration; d < 2*time.Hour+50*time.Minute {
		t.Errorf("evening stop: got %v, want over 2h50m (the manoeuvre must not split it)", d)
	}
}

func TestSegmentThresholds(t *testing.T) {
	start := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		legs      []leg
		wantTrips int
	}{
		{"short stop does not split", []leg{{dur: 10 * time.Minute, kmh: 50, every: 10 * time.Second},
			{dur: 4 * time.Minute, every: 10 * time.Second}, {dur: 10 * time.Minute, kmh: 50, every: 10 * time.Second}}, 1},
		{"parking splits", []leg{{dur: 10 * time.Minute, kmh: 50, every: 10 * time.Second},
			{dur: 6 * time.Minute, every: 10 * time.Second}, {dur: 10 * time.Minute, kmh: 50, every: 10 * time.Second}}, 2},
		{"gap splits", []leg{{dur: 10 * time.Minute, kmh: 50, every: 10 * time.Second},
			{dur: 31 * time.Minute, kmh: 50, every: 10 * time.Second, silent: true}, {dur: 10 * time.Minute, kmh: 50, every: 10 * time.Second}}, 2},
		{"too short a trip", []leg{{dur: 10 * time.Minute, every: time.Minute},
			{dur: 20 * time.Second, kmh: 30, every: 5 * time.Second}, {dur: 10 * time.Minute, every: time.Minute}}, 0},
		{"no data", nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fixes := synthDay(start, geo.Point{Lat: 10, Lon: 10}, tc.legs)
			trips, _ := Segment(fixes, DefaultTripConfig())
			if len(trips) != tc.wantTrips {
				t.Errorf("got %d trips, want %d", len(trips), tc.wantTrips)
			}
		})
	}
}

func TestSimplify(t *testing.T) {
	// A straight line with one 200 m detour in the middle.
	var fixes []Fix
	p := geo.Point{Lat: 0, Lon: 179.99} // crosses the antimeridian
	for i := range 101 {
		q := geo.Destination(p, 90, float64(i)*50)
		if i == 50 {
			q = geo.Destination(q, 0, 200)
		}
		fixes = append(fixes, Fix{Time: t0.Add(time.Duration(i) * time.Second), Lat: q.Lat, Lon: q.Lon})
	}
	tests := []struct {
		tol  float64
		want int
	}{
		{0, 101},
		{10, 5}, // ends, the detour and the two fixes where the line bends back
		{300, 2},
	}
	for _, tc := range tests {
		got := Simplify(fixes, tc.tol)
		if len(got) != tc.want {
			t.Errorf("tolerance %v m: got %d fixes, want %d", tc.tol, len(got), tc.want)
		}
		if got[0] != fixes[0] || got[len(got)-1] != fixes[len(fixes)-1] {
			t.Errorf("tolerance %v m: ends not kept", tc.tol)
		}
	}
}

// TestTripThresholdsPerGroup checks that a vehicle's group picks its short-trip
// thresholds and that other vehicles keep the defaults.
func TestTripThresholdsPerGroup(t *testing.T) {
	ctx := t.Context()
	cfg := DefaultConfig()
	long := cfg.Trips
	long.MinDistanceM, long.MinDuration = 2000, 5*time.Minute
	cfg.GroupTrips = map[string]TripConfig{"long-haul": long}
	store := NewMemoryStore()
	s, err := New(cfg, nil, store, discardLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	start := t0
	// Parked, a 3-minute 1.5 km hop at 30 km/h, parked again.
	fixes := synthDay(start, geo.Point{Lat: 48, Lon: 11}, []leg{
		{dur: 10 * time.Minute, every: time.Minute},
		{dur: 3 * time.Minute, kmh: 30, bearing: 90, every: 10 * time.Second, ign: true},
		{dur: 10 * time.Minute, every: time.Minute},
	})
	for _, id := range []string{"lh1", "van1"} {
		groups := []string{"vans"}
		if id == "lh1" {
			groups = []string{"depot-a", "long-haul"}
		}
		if err := store.Register(ctx, Info{ID: id, Groups: groups, Registered: true}); err != nil {
			t.Fatal(err)
		}
		var pts []TrackPoint
		for _, f := range fixes {
			pts = append(pts, TrackPoint{VehicleID: id, Fix: f})
		}
		if err := store.Write(ctx, Batch{Points: pts, Now: start.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		id    string
		trips int
	}{{"lh1", 0}, {"van1", 1}} {
		t.Run(tc.id, func(t *testing.T) {
			trips, _, err := s.Trips(ctx, tc.id, start, start.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if len(trips) != tc.trips {
				t.Errorf("got %d trips, want %d", len(trips), tc.trips)
			}
		})
	}
}
