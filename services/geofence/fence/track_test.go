package fence

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func mustZone(t *testing.T, spec Spec) *Zone {
	t.Helper()
	if spec.Name == "" {
		spec.Name = spec.ID
	}
	z, err := Compile(spec)
	if err != nil {
		t.Fatalf("compile %s: %v", spec.ID, err)
	}
	return z
}

// drive applies fixes and returns the events, failing on unexpected errors.
func drive(t *testing.T, r *Rules, ix *Index, st *State, fixes []Fix) []Event {
	t.Helper()
	var out []Event
	for _, f := range fixes {
		var err error
		out, err = r.Step(ix, st, f, out)
		if err != nil && !errors.Is(err, ErrOutOfOrder) {
			t.Fatalf("step: %v", err)
		}
	}
	return out
}

func kinds(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.Kind) + ":" + e.ZoneID
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var centre = geo.Point{Lat: 52.52, Lon: 13.40}

// at returns a fix d metres from centre on bearing b, at t0+sec seconds.
func at(b, d float64, sec int, speed float64) Fix {
	p := geo.Destination(centre, b, d)
	return Fix{Time: t0.Add(time.Duration(sec) * time.Second), Lat: p.Lat, Lon: p.Lon, SpeedKmh: speed}
}

func TestFlappingOnBoundary(t *testing.T) {
	// A circle of 500 m; a vehicle parks on its edge with ±8 m of GPS jitter, for 1 000
	// fixes, first from outside, then after a real entry, from inside.
	z := mustZone(t, Spec{ID: "depot", GeoJSON: `{"type":"Point","coordinates":[13.40,52.52]}`, RadiusM: 500, Alert: AlertBoth})
	ix := NewIndex([]*Zone{z})
	r := DefaultRules()
	rng := rand.New(rand.NewPCG(1, 2))
	st := &State{Vehicle: "v1"}
	sec := 0
	jitter := func(n int) []Fix {
		var fs []Fix
		for i := 0; i < n; i++ {
			sec += 10
			fs = append(fs, at(rng.Float64()*0.02, 500+rng.NormFloat64()*8, sec, 0))
		}
		return fs
	}
	if evs := drive(t, &r, ix, st, jitter(1000)); len(evs) != 0 {
		t.Fatalf("parked on the boundary, arriving from outside: got %d events %v, want none", len(evs), kinds(evs)[:min(6, len(evs))])
	}
	sec += 10
	if evs := drive(t, &r, ix, st, []Fix{at(0, 400, sec, 10)}); !equal(kinds(evs), []string{"enter:depot"}) {
		t.Fatalf("clearly inside: got %v, want one enter", kinds(evs))
	}
	if evs := drive(t, &r, ix, st, jitter(1000)); len(evs) != 0 {
		t.Fatalf("parked on the boundary after entering: got %d events %v, want none", len(evs), kinds(evs)[:min(6, len(evs))])
	}
	sec += 10
	if evs := drive(t, &r, ix, st, []Fix{at(0, 600, sec, 10)}); !equal(kinds(evs), []string{"exit:depot"}) {
		t.Fatalf("clearly outside: got %v, want one exit", kinds(evs))
	}
}

func TestEnterExitAndAlertKinds(t *testing.T) {
	geom := square(centre.Lat, centre.Lon, 300)
	tests := []struct {
		alert Alert
		want  []string
	}{
		{AlertEnter, []string{"enter:z"}},
		{AlertExit, []string{"exit:z"}},
		{AlertBoth, []string{"enter:z", "exit:z"}},
		{AlertMustStayInside, []string{"exit:z"}},
	}
	for _, tc := range tests {
		t.Run(string(tc.alert), func(t *testing.T) {
			ix := NewIndex([]*Zone{mustZone(t, Spec{ID: "z", GeoJSON: geom, Alert: tc.alert})})
			r := DefaultRules()
			st := &State{Vehicle: "v1"}
			// From 1 km west to the centre to 1 km east, 100 m steps.
			var fixes []Fix
			for i := 0; i <= 20; i++ {
				fixes = append(fixes, at(90, float64(i*100-1000), i*10, 36))
			}
			evs := drive(t, &r, ix, st, fixes)
			if !equal(kinds(evs), tc.want) {
				t.Fatalf("got %v, want %v", kinds(evs), tc.want)
			}
			for _, e := range evs {
				if e.Kind == Exit && e.MustStayInside != (tc.alert == AlertMustStayInside) {
					t.Errorf("exit must_stay_inside got %v, want %v", e.MustStayInside, tc.alert == AlertMustStayInside)
				}
				if e.Vehicle != "v1" || e.ZoneName != "z" || e.ID == "" || e.SpeedKmh != 36 {
					t.Errorf("event %+v lacks vehicle, zone name, id or speed", e)
				}
			}
			if st.Inside("z") {
				t.Errorf("got vehicle inside after leaving, want outside")
			}
		})
	}
}

func TestMustStayInsideOnlyAtNight(t *testing.T) {
	// A depot that must hold its vehicles 20:00–06:00 UTC: leaving at noon is fine,
	// leaving at 23:00 raises an exit flagged must_stay_inside.
	z := mustZone(t, Spec{ID: "depot", GeoJSON: square(centre.Lat, centre.Lon, 200), Alert: AlertMustStayInside,
		Schedule: &Schedule{Start: "20:00", End: "06:00"}})
	ix := NewIndex([]*Zone{z})
	r := DefaultRules()
	for _, tc := range []struct {
		name  string
		leave time.Time
		want  int
	}{
		{"noon", t0, 0},
		{"23:00", t0.Add(11 * time.Hour), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &State{Vehicle: "v"}
			p := geo.Destination(centre, 0, 500)
			evs := drive(t, &r, ix, st, []Fix{
				{Time: tc.leave.Add(-time.Hour), Lat: centre.Lat, Lon: centre.Lon},
				{Time: tc.leave, Lat: p.Lat, Lon: p.Lon},
			})
			if len(evs) != tc.want {
				t.Fatalf("got %v, want %d exit", kinds(evs), tc.want)
			}
			if tc.want == 1 && (!evs[0].MustStayInside || evs[0].Kind != Exit || !evs[0].Time.Equal(tc.leave)) {
				t.Errorf("got %+v, want a must-stay-inside exit at %s", evs[0], tc.leave)
			}
		})
	}
}

func TestPassThroughBetweenSparseFixes(t *testing.T) {
	zones := []*Zone{
		mustZone(t, Spec{ID: "square", GeoJSON: square(centre.Lat, centre.Lon, 100)}),
		mustZone(t, Spec{ID: "circle", GeoJSON: `{"type":"Point","coordinates":[13.40,52.521]}`, RadiusM: 50}),
		mustZone(t, Spec{ID: "road", GeoJSON: `{"type":"LineString","coordinates":[[13.40,52.50],[13.40,52.54]]}`, BufferM: 20}),
		mustZone(t, Spec{ID: "dwell", GeoJSON: square(centre.Lat, centre.Lon, 150), Alert: AlertDwell, DwellMinutes: 5}),
	}
	ix := NewIndex(zones)
	r := DefaultRules()
	west, east := at(270, 2000, 0, 80), at(90, 2000, 100, 80)
	st := &State{Vehicle: "v"}
	evs := drive(t, &r, ix, st, []Fix{west, east})
	got := map[string]Event{}
	for _, e := range evs {
		if e.Kind != Crossed {
			t.Errorf("got %s, want only crossed", e.Kind)
		}
		got[e.ZoneID] = e
	}
	if len(got) != 2 || got["square"].ZoneID == "" || got["road"].ZoneID == "" {
		t.Fatalf("got crossings %v, want square and road (the circle lies north of the path, the dwell zone does not alert on crossings)", kinds(evs))
	}
	// The square spans 1 900..2 100 m of the 4 000 m path covered in 100 s.
	sq := got["square"]
	if want := t0.Add(47500 * time.Millisecond); sq.Time.Sub(want).Abs() > time.Second {
		t.Errorf("square entered at %s, want about %s", sq.Time, want)
	}
	if want := t0.Add(52500 * time.Millisecond); sq.ExitTime.Sub(want).Abs() > time.Second {
		t.Errorf("square left at %s, want about %s", sq.ExitTime, want)
	}
	if st.Inside("square") || st.Inside("road") {
		t.Errorf("got membership after a pass-through, want none")
	}
	// Too long a gap: the path between the fixes is unknown, no crossing is claimed.
	st = &State{Vehicle: "v"}
	late := east
	late.Time = west.Time.Add(r.CrossMaxGap + time.Second)
	if evs := drive(t, &r, ix, st, []Fix{west, late}); len(evs) != 0 {
		t.Errorf("after a gap beyond CrossMaxGap got %v, want none", kinds(evs))
	}
	// A zone narrower than the fix spacing with exactly one fix inside it (not deep
	// enough to confirm an entry on its own) is a pass-through too.
	narrow := NewIndex([]*Zone{mustZone(t, Spec{ID: "lane", GeoJSON: square(centre.Lat, centre.Lon, 75)})})
	st = &State{Vehicle: "v"}
	evs = drive(t, &r, narrow, st, []Fix{at(90, -130, 0, 36), at(90, -30, 10, 36), at(90, 70+30, 20, 36)})
	if !equal(kinds(evs), []string{"crossed:lane"}) || !evs[0].Time.Equal(t0.Add(10*time.Second)) || !evs[0].ExitTime.Equal(t0.Add(20*time.Second)) {
		t.Errorf("one fix inside a narrow zone: got %v, want crossed:lane from +10s to +20s", kinds(evs))
	}
	// Across the antimeridian into a zone that straddles it.
	am := NewIndex([]*Zone{mustZone(t, Spec{ID: "fiji", GeoJSON: `{"type":"Polygon","coordinates":[[[179.99,-17.01],[-179.99,-17.01],[-179.99,-16.99],[179.99,-16.99],[179.99,-17.01]]]}`})})
	st = &State{Vehicle: "v"}
	evs = drive(t, &r, am, st, []Fix{
		{Time: t0, Lat: -17, Lon: 179.95},
		{Time: t0.Add(time.Minute), Lat: -17, Lon: -179.95},
	})
	if !equal(kinds(evs), []string{"crossed:fiji"}) {
		t.Errorf("across the antimeridian got %v, want crossed:fiji", kinds(evs))
	}
}

func TestDwell(t *testing.T) {
	z := mustZone(t, Spec{ID: "site", GeoJSON: square(centre.Lat, centre.Lon, 300), Alert: AlertDwell, DwellMinutes: 10})
	ix := NewIndex([]*Zone{z})
	r := DefaultRules()
	st := &State{Vehicle: "v"}
	var fixes []Fix
	for m := 0; m <= 30; m++ { // one fix a minute, parked inside for 30 minutes
		fixes = append(fixes, at(0, 10, 60*m, 0))
	}
	evs := drive(t, &r, ix, st, fixes)
	if !equal(kinds(evs), []string{"dwell:site"}) {
		t.Fatalf("got %v, want exactly one dwell", kinds(evs))
	}
	if !evs[0].Time.Equal(t0.Add(10 * time.Minute)) {
		t.Errorf("dwell at %s, want %s (10 minutes after the entering fix)", evs[0].Time, t0.Add(10*time.Minute))
	}
	// Leave, come back: a new visit can dwell again.
	evs = drive(t, &r, ix, st, []Fix{at(0, 1000, 60*31, 30), at(0, 10, 60*32, 0), at(0, 10, 60*40, 0), at(0, 10, 60*43, 0)})
	if !equal(kinds(evs), []string{"dwell:site"}) || !evs[0].Time.Equal(t0.Add(43*time.Minute)) {
		t.Fatalf("second visit got %v, want one dwell at +43m", kinds(evs))
	}
}

func TestOverspeedInZone(t *testing.T) {
	z := mustZone(t, Spec{ID: "yard", GeoJSON: square(centre.Lat, centre.Lon, 1000), Alert: AlertEnter, SpeedLimitKmh: 30})
	ix := NewIndex([]*Zone{z})
	r := DefaultRules()
	st := &State{Vehicle: "v"}
	speeds := []struct {
		kmh  float64
		want bool
	}{
		{20, false}, {35, true}, {40, false}, {28, false} /* not re-armed: above 30-5 */, {36, false},
		{20, false} /* re-armed */, {45, true}, {10, false},
	}
	// The first fix enters the zone (an enter event) — skip it when counting.
	_ = drive(t, &r, ix, st, []Fix{at(0, 0, 0, 10)})
	for i, s := range speeds {
		evs := drive(t, &r, ix, st, []Fix{at(0, float64(i), 10*(i+1), s.kmh)})
		got := len(evs) == 1 && evs[0].Kind == Overspeed
		if got != s.want || len(evs) > 1 {
			t.Errorf("fix %d at %v km/h: got %v, want overspeed %v", i, s.kmh, kinds(evs), s.want)
		}
		if got && (evs[0].SpeedLimitKmh != 30 || evs[0].SpeedKmh != s.kmh) {
			t.Errorf("got limit %v speed %v, want 30 and %v", evs[0].SpeedLimitKmh, evs[0].SpeedKmh, s.kmh)
		}
	}
	// Fast outside the zone is not this zone's business.
	evs := drive(t, &r, ix, st, []Fix{at(0, 5000, 1000, 120), at(0, 5100, 1010, 130)})
	for _, e := range evs {
		if e.Kind == Overspeed {
			t.Errorf("got overspeed outside the zone: %+v", e)
		}
	}
}

func TestOutOfOrderNeverGoesBack(t *testing.T) {
	z := mustZone(t, Spec{ID: "z", GeoJSON: square(centre.Lat, centre.Lon, 300)})
	ix := NewIndex([]*Zone{z})
	r := DefaultRules()
	st := &State{Vehicle: "v"}
	drive(t, &r, ix, st, []Fix{at(0, 0, 100, 0)}) // inside at t=100
	before := st.Clone()
	evs, err := r.Step(ix, st, at(0, 2000, 50, 0), nil) // an older fix, outside
	if !errors.Is(err, ErrOutOfOrder) || len(evs) != 0 {
		t.Fatalf("got %v, %v; want ErrOutOfOrder and no events", kinds(evs), err)
	}
	if !st.Inside("z") || !st.LastTime.Equal(before.LastTime) {
		t.Errorf("an out-of-order fix changed the state")
	}
	// The same fix again (a redelivery) changes nothing either.
	if _, err := r.Step(ix, st, at(0, 0, 100, 0), nil); !errors.Is(err, ErrOutOfOrder) {
		t.Errorf("replayed fix: got %v, want ErrOutOfOrder", err)
	}
}

func TestAppliesToAndDeletedZones(t *testing.T) {
	byVehicle := mustZone(t, Spec{ID: "a", GeoJSON: square(centre.Lat, centre.Lon, 300), Vehicles: []string{"v1"}})
	byGroup := mustZone(t, Spec{ID: "b", GeoJSON: square(centre.Lat, centre.Lon, 300), Groups: []string{"reefer"}})
	ix := NewIndex([]*Zone{byVehicle, byGroup})
	r := DefaultRules()
	r.Groups = map[string][]string{"v2": {"reefer"}}
	for _, tc := range []struct {
		vehicle string
		want    []string
	}{
		{"v1", []string{"enter:a"}},
		{"v2", []string{"enter:b"}},
		{"v3", nil},
	} {
		st := &State{Vehicle: tc.vehicle}
		if evs := drive(t, &r, ix, st, []Fix{at(0, 0, 0, 0)}); !equal(kinds(evs), tc.want) {
			t.Errorf("%s: got %v, want %v", tc.vehicle, kinds(evs), tc.want)
		}
	}
	// The registry's groups (GroupsOf) answer instead of the static map.
	reg := r
	reg.GroupsOf = func(v string) []string {
		if v == "v3" {
			return []string{"reefer"}
		}
		return nil
	}
	for _, tc := range []struct {
		vehicle string
		want    []string
	}{
		{"v2", nil},
		{"v3", []string{"enter:b"}},
	} {
		st := &State{Vehicle: tc.vehicle}
		if evs := drive(t, &reg, ix, st, []Fix{at(0, 0, 0, 0)}); !equal(kinds(evs), tc.want) {
			t.Errorf("registry groups, %s: got %v, want %v", tc.vehicle, kinds(evs), tc.want)
		}
	}
	// A deleted zone is forgotten without an exit.
	st := &State{Vehicle: "v1"}
	drive(t, &r, ix, st, []Fix{at(0, 0, 0, 0)})
	if evs := drive(t, &r, NewIndex(nil), st, []Fix{at(0, 5000, 10, 0)}); len(evs) != 0 || len(st.Zones) != 0 {
		t.Errorf("after deleting the zone got %v and %d memberships, want none", kinds(evs), len(st.Zones))
	}
}

func TestEventIDDeterministic(t *testing.T) {
	a := EventID(Enter, "v", "z", t0)
	if b := EventID(Enter, "v", "z", t0); a != b {
		t.Errorf("got %s and %s for the same cause, want equal", a, b)
	}
	if b := EventID(Exit, "v", "z", t0); a == b {
		t.Errorf("enter and exit share id %s", a)
	}
}
