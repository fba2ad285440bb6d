package dispatch

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

var home = geo.Point{Lat: 52.52, Lon: 13.405}

func testDetector(t *testing.T) *Detector {
	t.Helper()
	d, err := NewDetector(DefaultConfig().Detect)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// rec builds a record at t0+at, distM metres north of home.
func rec(at time.Duration, distM, speed float64, ign *bool) telemetry.Record {
	p := geo.Destination(home, 0, distM)
	r := telemetry.Record{VehicleID: "v1", DeviceTime: t0.Add(at), Lat: p.Lat, Lon: p.Lon, SpeedKmh: speed, FixValid: true}
	if ign != nil {
		r.Ignition = *ign
		r.Set(telemetry.HasIgnition)
	}
	return r
}

var (
	off = new(bool)
	on  = func() *bool { b := true; return &b }()
)

func kinds(as []Alert) string {
	var out []string
	for _, a := range as {
		out = append(out, a.Kind)
	}
	return strings.Join(out, ",")
}
func TestDeviceAlarmsWhateverTheFix(t *testing.T) {
	d := testDetector(t)
	for k := telemetry.AlarmTow; k.Valid(); k++ {
		for _, pos := range []struct {
			name   string
			mutate func(*telemetry.Record)
		}{
			{"valid fix", func(*telemetry.Record) {}},
			{"invalid fix", func(r *telemetry.Record) { r.FixValid = false }},
			{"NaN", func(r *telemetry.Record) { r.Lat, r.Lon = math.NaN(), math.Inf(1) }},
			{"null island", func(r *telemetry.Record) { r.Lat, r.Lon = 0, 0 }},
		} {
			t.Run(k.String()+"/"+pos.name, func(t *testing.T) {
				var st VehicleState
				r := rec(0, 0, 0, nil)
				pos.mutate(&r)
				r.Alarms = []telemetry.AlarmKind{k, k} // a repeated alarm is one alert
				got := d.Apply(&st, &r)
				if len(got) != 1 || got[0].Kind != k.String() || got[0].Sources[0] != SourceDevice {
					t.Fatalf("got alerts %q, want one %q from the device", kinds(got), k)
				}
				wantPos := pos.name == "valid fix"
				if got[0].HasPosition != wantPos {
					t.Fatalf("got HasPosition %v, want %v", got[0].HasPosition, wantPos)
				}
				wantKey := IncidentKey(k.String(), "v1")
				switch k {
				case telemetry.AlarmTow, telemetry.AlarmGNSSJamming, telemetry.AlarmGSMJamming:
					// Theft alarms open a tracked incident the server-side rules join.
					wantKey = trackedKey(k.String(), "v1", r.DeviceTime)
					if !got[0].Tracked || got[0].Confidence != ConfidenceHigh || len(got[0].Evidence) != 1 {
						t.Fatalf("got tracked %v confidence %s evidence %v, want a tracked, high-confidence alert with the alarm as evidence",
							got[0].Tracked, got[0].Confidence, got[0].Evidence)
					}
				}
				if got[0].IncidentKey != wantKey || got[0].CauseID == "" {
					t.Fatalf("got key %q cause %q, want key %q", got[0].IncidentKey, got[0].CauseID, wantKey)
				}
			})
		}
	}
}

// step is one record fed to the detector and the alert kinds it must raise.
type step struct {
	r    telemetry.Record
	want string
}

func runSteps(t *testing.T, d *Detector, steps []step) VehicleState {
	t.Helper()
	var st VehicleState
	for i, s := range steps {
		got := d.Apply(&st, &s.r)
		if kinds(got) != s.want {
			t.Fatalf("step %d (t+%s): got alerts %q, want %q (%s)", i, s.r.DeviceTime.Sub(t0), kinds(got), s.want, messages(got))
		}
	}
	return st
}

func messages(as []Alert) string {
	var out []string
	for _, a := range as {
		out = append(out, a.Message)
	}
	return strings.Join(out, "; ")
}

// Record options for the rule tables.
type opt func(*telemetry.Record)

func moving(r *telemetry.Record) { r.Movement = true; r.Set(telemetry.HasMovement) }
func still(r *telemetry.Record)  { r.Movement = false; r.Set(telemetry.HasMovement) }
func noFix(r *telemetry.Record)  { r.FixValid = false }
func poor(r *telemetry.Record)   { r.Satellites, r.HDOP = 4, 4.5 }
func gsm(l uint8) opt {
	return func(r *telemetry.Record) { r.GSMLevel = l; r.Set(telemetry.HasGSMLevel) }
}
func cell(id float64) opt {
	return func(r *telemetry.Record) { r.IO = map[string]float64{"205": id} }
}
func supply(v float64) opt {
	return func(r *telemetry.Record) { r.ExternalVoltage = v; r.Set(telemetry.HasExternalVoltage) }
}

// rr builds a record at t0+at, distM north of home, with good geometry unless changed.
func rr(at time.Duration, distM, speed float64, ign *bool, opts ...opt) telemetry.Record {
	r := rec(at, distM, speed, ign)
	r.Satellites, r.HDOP = 10, 0.9
	for _, o := range opts {
		o(&r)
	}
	return r
}

func TestTowRules(t *testing.T) {
	const min = time.Minute
	sec := func(n int) time.Duration { return time.Duration(n) * time.Second }
	parked := []step{
		{rr(0, 0, 0, off, still, cell(1)), ""},
		{rr(5*min, 5, 0, off, still, cell(1)), ""},
		{rr(10*min, 0, 0, off, still, cell(1)), ""},
	}
	with := func(steps ...step) []step { return append(append([]step{}, parked...), steps...) }
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"multipath: one fix 400 m off with 4 satellites and HDOP 4.5", with(
			step{rr(11*min, 400, 12, off, still, poor), ""},
			step{rr(12*min, 3, 0, off, still), ""},
		)},
		{"one good fix far off and back: not confirmed", with(
			step{rr(11*min, 600, 0, off, still), ""},
			step{rr(12*min, 3, 0, off, still), ""},
		)},
		{"valet: 50 m with one 11 km/h reading", with(
			step{rr(11*min, 10, 11, off, moving), ""},
			step{rr(11*min+sec(20), 30, 3, off, moving), ""},
			step{rr(11*min+sec(40), 50, 3, off, moving), ""},
			step{rr(12*min, 52, 0, off, still), ""},
			step{rr(20*min, 50, 0, off, still), ""},
		)},
		{"ferry: fixes far away, no accelerometer movement", with(
			step{rr(11*min, 500, 25, off, still, cell(2)), ""},
			step{rr(12*min+sec(30), 1500, 25, off, still, cell(3)), ""},
			step{rr(14*min, 2500, 25, off, still, cell(4)), ""},
		)},
		{"two good fixes away with movement", with(
			step{rr(11*min, 20, 2, off, moving), ""},
			step{rr(11*min+sec(30), 200, 25, off, moving), "tow"},
			step{rr(12*min, 400, 25, off, moving), ""},
		)},
		{"one good fix away plus the accelerometer", with(
			step{rr(11*min, 300, 25, off, moving), "tow"},
		)},
		{"tracker without accelerometer: two good fixes away", []step{
			{rr(0, 0, 0, off), ""},
			{rr(5*min, 200, 20, off), ""},
			{rr(6*min, 500, 20, off), "tow"},
		}},
		{"no fix: movement for 2 min and a new cell", with(
			step{rr(11*min, 0, 0, off, moving, noFix, cell(1)), ""},
			step{rr(12*min, 0, 0, off, moving, noFix, cell(2)), ""},
			step{rr(13*min, 0, 0, off, moving, noFix, cell(2)), "tow"},
		)},
		{"no fix: movement for 2 min and the supply cut", with(
			step{rr(11*min, 0, 0, off, moving, noFix, supply(0)), ""},
			step{rr(12*min, 0, 0, off, moving, noFix, supply(0)), ""},
			step{rr(13*min, 0, 0, off, moving, noFix, supply(0)), "tow"},
		)},
		{"no fix: movement alone for 3 min", with(
			step{rr(11*min, 0, 0, off, moving, noFix), ""},
			step{rr(13*min, 0, 0, off, moving, noFix), ""},
			step{rr(14*min, 0, 0, off, moving, noFix), "tow"},
		)},
		{"no fix: movement for 90 s alone", with(
			step{rr(11*min, 0, 0, off, moving, noFix), ""},
			step{rr(12*min+sec(30), 0, 0, off, moving, noFix), ""},
			step{rr(13*min, 0, 0, off, still, noFix), ""},
		)},
		{"parked: cells change and the supply drops, nothing moves", with(
			step{rr(11*min, 0, 0, off, still, cell(7), supply(0)), ""},
			step{rr(20*min, 0, 0, off, still, cell(8), supply(0)), ""},
			step{rr(30*min, 0, 0, off, still, cell(1), supply(0)), ""},
		)},
		{"driving with ignition on is not towing", []step{
			{rr(0, 0, 50, on, moving), ""},
			{rr(5*min, 3000, 50, on, moving), ""},
		}},
		{"no ignition data: no tow rule", []step{
			{rr(0, 0, 0, nil), ""},
			{rr(5*min, 3000, 50, nil), ""},
		}},
		{"old and repeated records do not move the state", []step{
			{rr(0, 0, 0, off), ""},
			{rr(5*min, 0, 0, off), ""},
			{rr(2*min, 900, 40, off), ""}, // older than the state: ignored by the rules
			{rr(5*min, 900, 40, off), ""}, // same time: a repeat
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { runSteps(t, testDetector(t), tc.steps) })
	}
}

// TestTowLifecycle: one incident, updated while it lasts, closed by a standstill counted
// from its own opening, and the next movement is a new incident with a new key.
func TestTowLifecycle(t *testing.T) {
	d := testDetector(t)
	const min = time.Minute
	st := runSteps(t, d, []step{
		{rr(0, 0, 0, off, still, cell(1)), ""},
		{rr(5*min, 0, 0, off, still, cell(1)), ""},
	})
	apply := func(r telemetry.Record) []Alert { t.Helper(); return d.Apply(&st, &r) }
	opened := apply(rr(6*min, 300, 20, off, moving, cell(1)))
	if len(opened) != 1 || opened[0].Kind != KindTow || !opened[0].Tracked || opened[0].Confidence < ConfidenceMedium {
		t.Fatalf("got %+v, want one tracked tow alert of at least medium confidence", opened)
	}
	key := opened[0].IncidentKey
	if got := evidenceKinds(opened[0].Evidence); !strings.Contains(got, EvFixes) || !strings.Contains(got, EvAccelerometer) || !strings.Contains(got, EvIgnitionOff) {
		t.Fatalf("got evidence %s, want fixes, accelerometer and ignition off", got)
	}
	// A new cell is news: one update with the same key. Further records add nothing.
	upd := apply(rr(7*min, 2000, 40, off, moving, cell(2)))
	if len(upd) != 1 || upd[0].IncidentKey != key || evidenceKinds(upd[0].Evidence) != EvCellChange {
		t.Fatalf("got %+v, want one update with the cell change", upd)
	}
	if got := apply(rr(8*min, 3000, 40, off, moving, cell(2))); len(got) != 0 {
		t.Fatalf("got %q, want nothing new", kinds(got))
	}
	// Unloaded: still from 9 min. Not closed at 18 min, closed at 19 min (10 min still).
	for _, m := range []time.Duration{9, 12, 15, 18} {
		if got := apply(rr(m*min, 3100, 0, off, still, cell(2))); len(got) != 0 {
			t.Fatalf("at %d min: got %q (%s), want nothing", m, kinds(got), messages(got))
		}
	}
	closed := apply(rr(19*min, 3100, 0, off, still, cell(2)))
	if len(closed) != 1 || closed[0].IncidentKey != key || closed[0].Attributes["closed"] == "" {
		t.Fatalf("got %+v, want the closing occurrence", closed)
	}
	// Re-armed where it stands: moved again, a new incident.
	again := apply(rr(25*min, 3500, 30, off, moving, cell(3)))
	if len(again) != 1 || again[0].Kind != KindTow || again[0].IncidentKey == key {
		t.Fatalf("got %+v, want a new tow incident", again)
	}
}

// TestTowOpenedByOneSlowFixDoesNotCloseAtOnce is the reported failure: a tow confirmed on
// a standing vehicle must not close on the record that opened it.
func TestTowOpenedByOneSlowFixDoesNotCloseAtOnce(t *testing.T) {
	d := testDetector(t)
	const min = time.Minute
	var st VehicleState
	for i, s := range []telemetry.Record{
		rr(0, 0, 0, off, still), rr(20*min, 0, 0, off, still), rr(21*min, 0, 0, off, still),
	} {
		if got := d.Apply(&st, &s); len(got) != 0 {
			t.Fatalf("step %d: got %q", i, kinds(got))
		}
	}
	var all []Alert
	for _, r := range []telemetry.Record{
		rr(22*min, 200, 3, off, moving), rr(22*min+20*time.Second, 260, 4, off, moving),
		rr(23*min, 300, 4, off, moving), rr(24*min, 350, 0, off, still),
	} {
		all = append(all, d.Apply(&st, &r)...)
	}
	if len(all) != 1 || all[0].Message == "" || st.Tow.Open != true {
		t.Fatalf("got %q, want one tow alert and the incident open", kinds(all))
	}
}

func TestJammingRules(t *testing.T) {
	const min = time.Minute
	sec := func(n int) time.Duration { return time.Duration(n) * time.Second }
	driving := []step{
		{rr(0, 0, 60, on, moving, gsm(4)), ""},
		{rr(sec(20), 300, 60, on, moving, gsm(4)), ""},
	}
	with := func(steps ...step) []step { return append(append([]step{}, driving...), steps...) }
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"jammer: GNSS lost and GSM falling while moving", with(
			step{rr(sec(40), 0, 0, on, moving, noFix, gsm(3)), ""},
			step{rr(sec(50), 0, 0, on, moving, noFix, gsm(1)), ""}, // lost for 10 s: could be a bridge
			step{rr(sec(62), 0, 0, on, moving, noFix, gsm(1)), "gnss_jamming"},
			step{rr(sec(75), 0, 0, on, moving, noFix, gsm(0)), ""},
		)},
		{"long tunnel: GNSS lost 5 min, GSM steady", with(
			step{rr(sec(40), 0, 0, on, moving, noFix, gsm(4)), ""},
			step{rr(2*min, 0, 0, on, moving, noFix, gsm(3)), ""},
			step{rr(5*min, 0, 0, on, moving, noFix, gsm(4)), ""},
			step{rr(5*min+sec(40), 5000, 70, on, moving, gsm(4)), ""},
		)},
		{"garage: GNSS lost, parked, GSM low", with(
			step{rr(sec(40), 0, 5, on, moving, noFix, gsm(2)), ""},
			step{rr(min, 0, 0, off, still, noFix, gsm(1)), ""},
			step{rr(30*min, 0, 0, off, still, noFix, gsm(1)), ""},
			step{rr(90*min, 0, 0, on, moving, noFix, gsm(1)), ""},
			step{rr(91*min, 0, 0, on, moving, noFix, gsm(2)), ""},
		)},
		{"one record of loss is not enough", with(
			step{rr(sec(40), 0, 0, on, moving, noFix, gsm(1)), ""},
			step{rr(sec(60), 700, 60, on, moving, gsm(4)), ""},
		)},
		{"ferry at sea: fix fine, GSM gone", []step{
			{rr(0, 0, 20, off, still, gsm(4)), ""},
			{rr(min, 300, 20, off, still, gsm(1)), ""},
			{rr(2*min, 600, 20, off, still, gsm(1)), ""},
		}},
		{"GNSS-only jammer for longer than any tunnel", with(
			step{rr(sec(40), 0, 0, on, moving, noFix, gsm(4)), ""},
			step{rr(10*min, 0, 0, on, moving, noFix, gsm(4)), ""},
			step{rr(21*min, 0, 0, on, moving, noFix, gsm(4)), "gnss_jamming"},
		)},
	} {
		t.Run(tc.name, func(t *testing.T) { runSteps(t, testDetector(t), tc.steps) })
	}
}

// TestJammingLifecycle: the silence rule and the record rule raise the same incident; one
// good fix does not end it, two do.
func TestJammingLifecycle(t *testing.T) {
	d := testDetector(t)
	sec := func(n int) time.Duration { return time.Duration(n) * time.Second }
	var st VehicleState
	recv := func(r telemetry.Record) telemetry.Record { r.ReceivedTime = r.DeviceTime.Add(time.Second); return r }
	for _, r := range []telemetry.Record{
		recv(rr(0, 0, 60, on, moving, gsm(4))),
		recv(rr(sec(20), 300, 60, on, moving, gsm(4))),
		recv(rr(sec(40), 0, 0, on, moving, noFix, gsm(3))), // then nothing arrives
	} {
		if got := d.Apply(&st, &r); len(got) != 0 {
			t.Fatalf("got %q before the silence", kinds(got))
		}
	}
	if !SilenceCheck(&st) {
		t.Fatal("got no silence watch after GNSS lost while moving")
	}
	if got := d.Silent(&st, t0.Add(sec(41+100))); len(got) != 0 {
		t.Fatalf("got %q after 100 s of silence, want nothing before 2 min", kinds(got))
	}
	silent := d.Silent(&st, t0.Add(sec(41+125)))
	if len(silent) != 1 || silent[0].Kind != KindGNSSJamming || !strings.Contains(evidenceKinds(silent[0].Evidence), EvSilence) || !silent[0].HasPosition {
		t.Fatalf("got %+v, want a jamming alert with the silence as evidence and the last position", silent)
	}
	// The buffered records arrive: the record rule opens the same incident (same key).
	var later []Alert
	for _, r := range []telemetry.Record{
		recv(rr(sec(60), 0, 0, on, moving, noFix, gsm(1))),
		recv(rr(sec(80), 0, 0, on, moving, noFix, gsm(1))),
	} {
		later = append(later, d.Apply(&st, &r)...)
	}
	if len(later) != 1 || later[0].IncidentKey != silent[0].IncidentKey {
		t.Fatalf("got %+v, want one occurrence of incident %s", later, silent[0].IncidentKey)
	}
	if got := d.Silent(&st, t0.Add(10*time.Minute)); len(got) != 0 {
		t.Fatalf("got %q, want no silence alert while the incident is open", kinds(got))
	}
	r := rr(sec(100), 5000, 60, on, moving, gsm(4))
	if got := d.Apply(&st, &r); len(got) != 0 || !st.Jam.Open {
		t.Fatalf("one good fix: got %q, open %v; want the incident still open", kinds(got), st.Jam.Open)
	}
	r = rr(sec(120), 5300, 60, on, moving, gsm(4))
	if got := d.Apply(&st, &r); len(got) != 1 || got[0].Attributes["closed"] == "" || st.Jam.Open {
		t.Fatalf("two good fixes: got %+v, want the closing occurrence", got)
	}
}

// TestDeviceAlarmJoinsIncident: a tracker's TOW alarm and the tow rule are one incident.
func TestDeviceAlarmJoinsIncident(t *testing.T) {
	d := testDetector(t)
	const min = time.Minute
	var st VehicleState
	var all []Alert
	for _, r := range []telemetry.Record{
		rr(0, 0, 0, off, still), rr(5*min, 0, 0, off, still),
		func() telemetry.Record {
			r := rr(6*min, 0, 0, off, moving)
			r.Alarms = []telemetry.AlarmKind{telemetry.AlarmTow}
			return r
		}(),
		rr(7*min, 400, 20, off, moving), rr(8*min, 900, 30, off, moving),
		func() telemetry.Record {
			r := rr(9*min, 1200, 0, off, moving)
			r.Alarms = []telemetry.AlarmKind{telemetry.AlarmTow}
			return r
		}(),
	} {
		all = append(all, d.Apply(&st, &r)...)
	}
	if len(all) < 2 {
		t.Fatalf("got %q, want the alarm and the rule's evidence", kinds(all))
	}
	for _, a := range all {
		if a.IncidentKey != all[0].IncidentKey || a.Kind != KindTow {
			t.Fatalf("got %s %s, want every occurrence in incident %s", a.Kind, a.IncidentKey, all[0].IncidentKey)
		}
	}
}

// TestTrackedIncidentIsOneAlert: resolving a tracked incident's alert does not make its
// next occurrence a new alert, however late it comes.
func TestTrackedIncidentIsOneAlert(t *testing.T) {
	ctx := t.Context()
	st := NewMemoryStore()
	a := Alert{Vehicle: "v1", Kind: KindTow, IncidentKey: "tow:v1:x", Tracked: true, CauseID: "c1", FirstTime: t0, LastTime: t0, Occurrences: 1,
		Confidence: ConfidenceMedium, Evidence: []Evidence{{Kind: EvFixes}}}
	first, isNew, err := st.RaiseAlert(ctx, a, time.Minute)
	if err != nil || !isNew {
		t.Fatalf("got new %v err %v", isNew, err)
	}
	if _, err := st.SetAlertState(ctx, first.ID, AlertResolved, "op", "", t0); err != nil {
		t.Fatal(err)
	}
	b := a
	b.CauseID, b.FirstTime, b.LastTime, b.Confidence, b.Evidence = "c2", t0.Add(time.Hour), t0.Add(time.Hour), ConfidenceHigh, []Evidence{{Kind: EvCellChange}}
	got, isNew, err := st.RaiseAlert(ctx, b, time.Minute)
	if err != nil || isNew || got.ID != first.ID || got.Occurrences != 2 || got.Confidence != ConfidenceHigh || len(got.Evidence) != 2 {
		t.Fatalf("got %+v new %v err %v, want occurrence 2 of alert %d with both evidence", got, isNew, err, first.ID)
	}
}
func TestMovementOutsideHours(t *testing.T) {
	cfg := DefaultConfig().Detect
	cfg.Schedules = map[string]Schedule{
		"day-shift": {TimeZone: "Europe/Berlin", Windows: []Window{{Days: []time.Weekday{1, 2, 3, 4, 5}, Start: "07:00", End: "19:00"}}},
		"v2":        {TimeZone: "America/New_York", Windows: []Window{{Start: "22:00", End: "06:00"}}},
	}
	cfg.Groups = map[string]string{"v1": "day-shift", "v2": "day-shift"}
	d, err := NewDetector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	at := func(v string, tm time.Time, speed float64) telemetry.Record {
		r := telemetry.Record{VehicleID: v, DeviceTime: tm, Lat: home.Lat, Lon: home.Lon, SpeedKmh: speed, FixValid: true, Ignition: true}
		r.Set(telemetry.HasIgnition)
		return r
	}
	glitch := func(v string, tm time.Time, speed float64) telemetry.Record {
		return telemetry.Record{VehicleID: v, DeviceTime: tm, Lat: home.Lat, Lon: home.Lon, SpeedKmh: speed, FixValid: true}
	}
	tue := func(h, m int) time.Time { return time.Date(2026, 3, 10, h, m, 0, 0, berlin) } // a Tuesday
	var st VehicleState
	for i, s := range []struct {
		r    telemetry.Record
		want string
	}{
		{glitch("v1", tue(6, 20), 40), ""}, // one moving fix, nothing else moving: not confirmed
		{glitch("v1", tue(6, 25), 0), ""},
		{at("v1", tue(6, 30), 40), KindMovementOutsideHours},
		{at("v1", tue(6, 40), 40), ""},                       // same incident
		{at("v1", tue(7, 10), 40), KindMovementOutsideHours}, // allowed hours: the closing occurrence
		{at("v1", tue(19, 30), 0), ""},                       // outside, but parked
		{at("v1", tue(19, 40), 30), KindMovementOutsideHours},
	} {
		if got := kinds(d.Apply(&st, &s.r)); got != s.want {
			t.Fatalf("step %d: got %q, want %q", i, got, s.want)
		}
	}
	// v2's own (overnight, New York) schedule wins over its group's.
	ny, _ := time.LoadLocation("America/New_York")
	var st2 VehicleState
	r := at("v2", time.Date(2026, 3, 10, 23, 0, 0, 0, ny), 50)
	if got := kinds(d.Apply(&st2, &r)); got != "" {
		t.Fatalf("v2 at 23:00 New York: got %q, want none", got)
	}
	r = at("v2", time.Date(2026, 3, 11, 12, 0, 0, 0, ny), 50)
	if got := kinds(d.Apply(&st2, &r)); got != KindMovementOutsideHours {
		t.Fatalf("v2 at noon New York: got %q, want %q", got, KindMovementOutsideHours)
	}
}

func TestScheduleAllowed(t *testing.T) {
	cs, err := compileSchedule(Schedule{TimeZone: "Europe/Berlin", Windows: []Window{
		{Days: []time.Weekday{time.Friday}, Start: "22:00", End: "02:00"},
		{Days: []time.Weekday{time.Monday}, Start: "08:00", End: "12:00"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	for _, tc := range []struct {
		t    time.Time
		want bool
	}{
		{time.Date(2026, 3, 13, 23, 0, 0, 0, berlin), true},  // Friday evening
		{time.Date(2026, 3, 14, 1, 59, 0, 0, berlin), true},  // Saturday early, Friday's window
		{time.Date(2026, 3, 14, 2, 0, 0, 0, berlin), false},  // end is exclusive
		{time.Date(2026, 3, 13, 1, 0, 0, 0, berlin), false},  // Friday early: Thursday has no window
		{time.Date(2026, 3, 16, 8, 0, 0, 0, berlin), true},   // Monday
		{time.Date(2026, 3, 16, 7, 0, 0, 0, time.UTC), true}, // 08:00 Berlin in UTC
		{time.Date(2026, 3, 16, 12, 0, 0, 0, berlin), false},
	} {
		if got := cs.allowed(tc.t); got != tc.want {
			t.Errorf("allowed(%s): got %v, want %v", tc.t, got, tc.want)
		}
	}
	for _, bad := range []Schedule{
		{TimeZone: "Mars/Olympus"},
		{Windows: []Window{{Start: "25:00", End: "01:00"}}},
		{Windows: []Window{{Start: "8", End: "10:00"}}},
		{Windows: []Window{{Days: []time.Weekday{9}, Start: "08:00", End: "10:00"}}},
	} {
		if _, err := compileSchedule(bad); err == nil {
			t.Errorf("compileSchedule(%+v): got nil error, want one", bad)
		}
	}
}

func TestAlertFromEvent(t *testing.T) {
	ev := func(src, kind string, attrs map[string]string) *EventIn {
		return &EventIn{ID: "e1", Source: src, Kind: kind, Vehicle: "v1", Time: t0, Attributes: attrs}
	}
	for _, tc := range []struct {
		name     string
		e        *EventIn
		act      EventAction
		kind     string
		severity Severity
		key      string
	}{
		{"offline", ev("tracking", "status_changed", map[string]string{"status": "offline", "previous": "moving"}), EventRaise, KindOffline, SeverityWarning, "offline:v1"},
		{"back online", ev("tracking", "status_changed", map[string]string{"status": "moving", "previous": "offline"}), EventResolve, KindOffline, SeverityWarning, "offline:v1"},
		{"other status", ev("tracking", "status_changed", map[string]string{"status": "moving", "previous": "stopped"}), EventIgnore, KindOffline, SeverityWarning, "offline:v1"},
		{"must stay inside exit", ev("geofence", "exit", map[string]string{"zone_id": "z9", "must_stay_inside": "true"}), EventRaise, KindZoneExit, SeverityCritical, "zone_exit:v1:z9"},
		{"plain exit, zone without a policy", ev("geofence", "exit", map[string]string{"zone_id": "z9"}), EventOnly, "geofence_exit", SeverityInfo, "geofence_exit:v1:z9"},
		{"plain exit, zone asks no alert", ev("geofence", "exit", map[string]string{"zone_id": "z9", "alert": "false"}), EventOnly, "geofence_exit", SeverityInfo, "geofence_exit:v1:z9"},
		{"plain exit, zone asks an alert", ev("geofence", "exit", map[string]string{"zone_id": "z9", "alert": "true"}), EventRaise, "geofence_exit", SeverityInfo, "geofence_exit:v1:z9"},
		{"enter", ev("geofence", "enter", map[string]string{"zone_id": "z9", "alert": "false"}), EventOnly, "geofence_enter", SeverityInfo, "geofence_enter:v1:z9"},
		{"dwell", ev("geofence", "dwell", map[string]string{"zone_id": "z9"}), EventOnly, "geofence_dwell", SeverityInfo, "geofence_dwell:v1:z9"},
		{"crossed", ev("geofence", "crossed", map[string]string{"zone_id": "z9"}), EventOnly, "geofence_crossed", SeverityInfo, "geofence_crossed:v1:z9"},
		{"overspeed in zone", ev("geofence", "overspeed_in_zone", map[string]string{"zone_id": "z9"}), EventRaise, "overspeed_in_zone", SeverityWarning, "overspeed_in_zone:v1:z9"},
		{"overspeed, zone asks no alert", ev("geofence", "overspeed_in_zone", map[string]string{"zone_id": "z9", "alert": "false"}), EventOnly, "overspeed_in_zone", SeverityWarning, "overspeed_in_zone:v1:z9"},
		{"must stay inside exit, zone asks no alert", ev("geofence", "exit", map[string]string{"zone_id": "z9", "must_stay_inside": "true", "alert": "false"}), EventOnly, KindZoneExit, SeverityCritical, "zone_exit:v1:z9"},
		{"fuel drain", ev("maintenance", "fuel_drain", map[string]string{"litres": "35", "confidence": "0.90"}), EventRaise, KindFuelTheft, SeverityCritical, "fuel_theft:v1:e1"},
		{"fuel drain without confidence", ev("maintenance", "fuel_drain", map[string]string{"litres": "35"}), EventRaise, KindFuelTheft, SeverityCritical, "fuel_theft:v1:e1"},
		{"plan overdue", ev("maintenance", "plan_overdue", map[string]string{"plan_id": "oil"}), EventRaise, "plan_overdue", SeverityWarning, "plan_overdue:v1:oil"},
		{"dead letter", ev("geofence", "dead_letter", map[string]string{"durable": "geofence-p03", "error": "poison input"}), EventRaise, KindDeadLetter, SeverityCritical, "dead_letter:v1:geofence-p03"},
		{"own dead letter", ev("dispatch", "dead_letter", map[string]string{"durable": "dispatch-events"}), EventRaise, KindDeadLetter, SeverityCritical, "dead_letter:v1:dispatch-events"},
		{"unknown", ev("maintenance", "something_new", nil), EventIgnore, "", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, act := AlertFromEvent(tc.e)
			if act != tc.act {
				t.Fatalf("got action %d, want %d", act, tc.act)
			}
			if act == EventIgnore && tc.kind == "" {
				return
			}
			if a.Kind != tc.kind || a.Severity != tc.severity || a.IncidentKey != tc.key || a.CauseID != "evt:e1" {
				t.Fatalf("got kind %q severity %v key %q cause %q, want %q %v %q evt:e1", a.Kind, a.Severity, a.IncidentKey, a.CauseID, tc.kind, tc.severity, tc.key)
			}
		})
	}
}

func TestParseSchedules(t *testing.T) {
	sched, groups, err := ParseSchedules([]byte(`{"groups":{"van-1":"day"},
		"schedules":{"day":{"time_zone":"Europe/Berlin","windows":[{"days":["Mon","fri"],"start":"07:00","end":"19:00"}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Schedule{TimeZone: "Europe/Berlin", Windows: []Window{{Days: []time.Weekday{time.Monday, time.Friday}, Start: "07:00", End: "19:00"}}}
	if got := sched["day"]; got.TimeZone != want.TimeZone || len(got.Windows) != 1 || got.Windows[0].Start != "07:00" ||
		len(got.Windows[0].Days) != 2 || got.Windows[0].Days[1] != time.Friday || groups["van-1"] != "day" {
		t.Fatalf("got %+v %v, want %+v and van-1 in day", sched, groups, want)
	}
	for _, bad := range []string{
		`{"groups":{"van-1":"nope"}}`,
		`{"schedules":{"x":{"time_zone":"Nowhere/City"}}}`,
		`{"schedules":{"x":{"windows":[{"days":["someday"],"start":"07:00","end":"08:00"}]}}}`,
		`{"schedules":{"x":{"windows":[{"start":"7","end":"08:00"}]}}}`,
		`{"schedule":{}}`,
		`not json`,
	} {
		if _, _, err := ParseSchedules([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSchedules(%s): got %v, want ErrInvalid", bad, err)
		}
	}
}

func TestGroupThresholds(t *testing.T) {
	cfg, err := ParseDetectConfig([]byte(`{"groups":{"v1":"trucks"},
		"thresholds":{"trucks":{"tow_distance_m":1000,"tow_movement_alone_s":600}}}`), DefaultConfig().Detect)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.GroupThresholds["trucks"]; got.TowDistanceM != 1000 || got.TowMovementAlone != 10*time.Minute || got.TowSpeedKmh != 10 {
		t.Fatalf("got %+v, want distance 1000, movement alone 10 min, the rest default", got)
	}
	d, err := NewDetector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// 400 m with movement is a tow for the defaults, not for the trucks' 1 000 m.
	steps := []step{
		{rr(0, 0, 0, off, still), ""},
		{rr(5*time.Minute, 0, 0, off, still), ""},
		{rr(6*time.Minute, 400, 20, off, moving), ""},
	}
	runSteps(t, d, steps)
	other := steps[len(steps)-1]
	other.want = KindTow
	var st VehicleState
	for _, s := range append(steps[:2:2], other) {
		s.r.VehicleID = "v2"
		if got := kinds(d.Apply(&st, &s.r)); got != s.want {
			t.Fatalf("v2 at %s: got %q, want %q", s.r.DeviceTime.Sub(t0), got, s.want)
		}
	}
	for _, bad := range []string{
		`{"thresholds":{"x":{"tow_distance_m":-1}}}`,
		`{"thresholds":{"x":{"tow_movement_for_s":600,"tow_movement_alone_s":60}}}`,
		`{"thresholds":{"x":{"no_such":1}}}`,
	} {
		if _, err := ParseDetectConfig([]byte(bad), DefaultConfig().Detect); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseDetectConfig(%s): got %v, want ErrInvalid", bad, err)
		}
	}
	if _, _, err := ParseSchedules([]byte(`{"thresholds":{"x":{}}}`)); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseSchedules with thresholds: got %v, want ErrInvalid", err)
	}
}

func TestGroupFuelConfidence(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"groups":{"v1":"trucks","v2":"vans"},
		"thresholds":{"trucks":{"fuel_min_confidence":0.8},"vans":{"tow_distance_m":500}}}`), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		vehicle string
		want    float64
	}{{"v1", 0.8}, {"v2", FuelMinConfidence}, {"v3", FuelMinConfidence}} {
		if got := cfg.fuelThreshold(tc.vehicle); got != tc.want {
			t.Errorf("%s: got threshold %v, want %v", tc.vehicle, got, tc.want)
		}
	}
	if got := cfg.Detect.GroupThresholds["vans"].TowDistanceM; got != 500 {
		t.Errorf("vans tow distance: got %v, want 500 (the detector thresholds still apply)", got)
	}
	for _, bad := range []string{
		`{"thresholds":{"x":{"fuel_min_confidence":1.5}}}`,
		`{"thresholds":{"x":{"fuel_min_confidence":-0.1}}}`,
		`{"thresholds":{"x":{"fuel_min_confidence":"high"}}}`,
	} {
		if _, err := ParseConfig([]byte(bad), DefaultConfig()); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseConfig(%s): got %v, want ErrInvalid", bad, err)
		}
	}
}

func TestGradeFuelAlert(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Detect.Groups = map[string]string{"cargo1": "cargo", "van1": "vans"}
	cfg.Detect.Groups["van1b"] = "cargo"
	cfg.FuelMinConfidenceByGroup = map[string]float64{"cargo": 0.3, "vans": 0.95}
	// The registry's groups: the first with a threshold applies (UseRegistry sets this).
	cfg.Detect.GroupsOf = func(v string) []string {
		return map[string][]string{"reg1": {"red", "vans"}, "van1b": {"vans"}, "reg2": {"red"}}[v]
	}
	for _, tc := range []struct {
		name, vehicle, conf string
		want                Severity
		unconfirmed         bool
	}{
		{"confirmed drain", "v1", "0.90", SeverityCritical, false},
		{"suggested drain", "v1", "0.35", SeverityWarning, true},
		{"no confidence (older maintenance)", "v1", "", SeverityCritical, false},
		{"group with a lower threshold", "cargo1", "0.35", SeverityCritical, false},
		{"group with a higher threshold", "van1", "0.90", SeverityWarning, true},
		{"confirmed refuel", "v1", "0.90", SeverityInfo, false},
		{"suggested refuel", "v1", "0.35", SeverityInfo, true},
		{"registry group with a threshold", "reg1", "0.90", SeverityWarning, true},
		{"the file's group wins over the registry's", "van1b", "0.35", SeverityCritical, false},
		{"registry group without a threshold", "reg2", "0.35", SeverityWarning, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			attrs := map[string]string{"litres": "14.0"}
			if tc.conf != "" {
				attrs["confidence"] = tc.conf
			}
			kind, alert := "fuel_drain", KindFuelTheft
			if strings.HasSuffix(tc.name, "refuel") {
				kind, alert = "refuel", KindRefuel
			}
			a, act := AlertFromEvent(&EventIn{ID: "e1", Source: "maintenance", Kind: kind, Vehicle: tc.vehicle, Time: t0, Attributes: attrs})
			GradeFuelAlert(&a, cfg.fuelThreshold(tc.vehicle))
			if act != EventRaise || a.Kind != alert || a.Severity != tc.want {
				t.Fatalf("got %v %s severity %v, want a %s %s alert", act, a.Kind, a.Severity, tc.want, alert)
			}
			if got := strings.Contains(a.Message, "unconfirmed"); got != tc.unconfirmed || !strings.Contains(a.Message, "14.0 l") {
				t.Errorf("message: got %q, want unconfirmed=%v and the volume", a.Message, tc.unconfirmed)
			}
		})
	}
	bad := DefaultConfig()
	bad.FuelMinConfidenceByGroup = map[string]float64{"g": 1.5}
	if _, err := New(bad, nil, NewMemoryStore(), nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("threshold 1.5: got %v, want ErrInvalid", err)
	}
}
