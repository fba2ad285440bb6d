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
				if got[0].IncidentKey != IncidentKey(k.String(), "v1") || got[0].CauseID == "" {
					t.Fatalf("got key %q cause %q", got[0].IncidentKey, got[0].CauseID)
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
			t.Fatalf("step %d (t+%s): got alerts %q, want %q", i, s.r.DeviceTime.Sub(t0), kinds(got), s.want)
		}
	}
	return st
}

func TestTheftRules(t *testing.T) {
	noFix := func(r telemetry.Record) telemetry.Record { r.FixValid = false; return r }
	min := time.Minute
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"tow by distance, once per incident", []step{
			{rec(0, 0, 0, off), ""},
			{rec(30*time.Second, 50, 0, off), ""}, // not armed yet: the car rolls into its space
			{rec(5*min, 60, 0, off), ""},
			{rec(6*min, 100, 3, off), ""}, // 40 m from where it parked: drift
			{rec(7*min, 260, 8, off), "tow"},
			{rec(8*min, 900, 30, off), ""},
			{rec(9*min, 1500, 30, off), ""},
		}},
		{"tow by speed", []step{
			{rec(0, 0, 0, off), ""},
			{rec(2*min, 20, 25, off), "tow"},
		}},
		{"tow incident closes after standing still, next movement is a new one", []step{
			{rec(0, 0, 0, off), ""},
			{rec(2*min, 300, 20, off), "tow"},
			{rec(3*min, 2000, 0, off), ""},
			{rec(14*min, 2000, 0, off), ""}, // still for 11 min: closed, re-armed here
			{rec(15*min, 2100, 0, off), ""},
			{rec(16*min, 2400, 20, off), "tow"},
		}},
		{"ignition on closes and disarms", []step{
			{rec(0, 0, 0, off), ""},
			{rec(2*min, 300, 20, off), "tow"},
			{rec(3*min, 400, 20, on), ""},
			{rec(4*min, 900, 40, on), ""},
			{rec(5*min, 900, 0, off), ""},
			{rec(5*min+30*time.Second, 1100, 20, off), ""}, // not armed again yet
		}},
		{"driving with ignition on is not towing", []step{
			{rec(0, 0, 50, on), ""},
			{rec(5*min, 3000, 50, on), ""},
		}},
		{"no ignition data: no tow rule", []step{
			{rec(0, 0, 0, nil), ""},
			{rec(5*min, 3000, 50, nil), ""},
		}},
		{"jamming: lost while moving, back far away", []step{
			{rec(0, 0, 60, on), ""},
			{noFix(rec(30*time.Second, 500, 0, on)), ""},
			{noFix(rec(2*min, 0, 0, on)), ""},
			{rec(3*min, 3000, 60, on), "gnss_jamming"},
			{rec(4*min, 4000, 60, on), ""},
		}},
		{"short tunnel is not jamming", []step{
			{rec(0, 0, 60, on), ""},
			{noFix(rec(20*time.Second, 0, 0, on)), ""},
			{rec(40*time.Second, 1200, 60, on), ""},
		}},
		{"fix lost while parked is not jamming", []step{
			{rec(0, 0, 0, on), ""},
			{noFix(rec(time.Minute, 0, 0, on)), ""},
			{rec(10*min, 5000, 0, on), ""},
		}},
		{"old and repeated records do not move the state", []step{
			{rec(0, 0, 0, off), ""},
			{rec(5*min, 0, 0, off), ""},
			{rec(2*min, 900, 40, off), ""}, // older than the state: ignored by the rules
			{rec(5*min, 900, 40, off), ""}, // same time: a repeat
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { runSteps(t, testDetector(t), tc.steps) })
	}
}

func TestTowAlertDetails(t *testing.T) {
	d := testDetector(t)
	st := runSteps(t, d, []step{{rec(0, 0, 0, off), ""}})
	r := rec(2*time.Minute, 400, 12, off)
	got := d.Apply(&st, &r)
	if len(got) != 1 {
		t.Fatalf("got %d alerts, want 1", len(got))
	}
	a := got[0]
	if a.Severity != SeverityCritical || !a.FirstTime.Equal(r.DeviceTime) || !a.HasPosition || a.Attributes["distance_m"] != "400" || a.Sources[0] != SourceDispatch {
		t.Fatalf("got %+v", a)
	}
	if !st.TowActive {
		t.Fatal("got TowActive false after a tow alert, want true")
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
		return telemetry.Record{VehicleID: v, DeviceTime: tm, Lat: home.Lat, Lon: home.Lon, SpeedKmh: speed, FixValid: true}
	}
	tue := func(h, m int) time.Time { return time.Date(2026, 3, 10, h, m, 0, 0, berlin) } // a Tuesday
	var st VehicleState
	for i, s := range []struct {
		r    telemetry.Record
		want string
	}{
		{at("v1", tue(6, 30), 40), KindMovementOutsideHours},
		{at("v1", tue(6, 40), 40), ""}, // same incident
		{at("v1", tue(7, 10), 40), ""}, // allowed hours: closes it
		{at("v1", tue(19, 30), 0), ""}, // outside, but parked
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
		{"plain exit", ev("geofence", "exit", map[string]string{"zone_id": "z9"}), EventRaise, "geofence_exit", SeverityInfo, "geofence_exit:v1:e1"},
		{"overspeed in zone", ev("geofence", "overspeed_in_zone", map[string]string{"zone_id": "z9"}), EventRaise, "overspeed_in_zone", SeverityWarning, "overspeed_in_zone:v1:z9"},
		{"fuel drain", ev("maintenance", "fuel_drain", map[string]string{"litres": "35", "confidence": "0.90"}), EventRaise, KindFuelTheft, SeverityCritical, "fuel_theft:v1:e1"},
		{"fuel drain without confidence", ev("maintenance", "fuel_drain", map[string]string{"litres": "35"}), EventRaise, KindFuelTheft, SeverityCritical, "fuel_theft:v1:e1"},
		{"unconfirmed fuel drain", ev("maintenance", "fuel_drain", map[string]string{"litres": "12", "confidence": "0.35"}), EventRaise, KindFuelTheft, SeverityWarning, "fuel_theft:v1:e1"},
		{"plan overdue", ev("maintenance", "plan_overdue", map[string]string{"plan_id": "oil"}), EventRaise, "plan_overdue", SeverityWarning, "plan_overdue:v1:oil"},
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
