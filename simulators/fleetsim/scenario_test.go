package fleetsim

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

func between(r *telemetry.Record, a, b time.Time) bool {
	return !r.DeviceTime.Before(a) && r.DeviceTime.Before(b)
}

func hasAlarm(r *telemetry.Record, k telemetry.AlarmKind) bool {
	for _, a := range r.Alarms {
		if a == k {
			return true
		}
	}
	return false
}

func TestScenarioGroundTruth(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Vehicles = 14
	cfg.Scenarios = true
	cfg.Seed = 7
	cfg.Start = time.Date(2026, 3, 2, 23, 30, 0, 0, time.UTC) // 00:30 in Berlin: the night incident falls inside
	cfg.InvalidFixProb = 0                                    // so every lost fix is the scripted one
	s, err := NewSim(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecording(t)
	rec.keepRaw = true
	s.advance(s.Start().Add(3*time.Hour), rec)

	path := filepath.Join(t.TempDir(), "truth.json")
	if err := s.WriteGroundTruth(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var gt GroundTruth
	if err := json.Unmarshal(data, &gt); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gt, s.GroundTruth()) {
		t.Fatalf("ground truth file does not round-trip:\n got %+v\nwant %+v", gt, s.GroundTruth())
	}
	if len(gt.Incidents) != len(IncidentKinds) {
		t.Fatalf("got %d incidents, want %d", len(gt.Incidents), len(IncidentKinds))
	}
	vehicles := map[string]bool{}
	for _, inc := range gt.Incidents {
		t.Run(string(inc.Kind), func(t *testing.T) {
			if !inc.Happened {
				t.Fatalf("incident %s did not happen within the run", inc.ID)
			}
			if vehicles[inc.Vehicle] {
				t.Errorf("vehicle %s has two incidents", inc.Vehicle)
			}
			vehicles[inc.Vehicle] = true
			rs := append([]telemetry.Record(nil), rec.records[inc.Vehicle]...)
			sort.SliceStable(rs, func(i, j int) bool { return rs[i].DeviceTime.Before(rs[j].DeviceTime) })
			if inc.Kind != IncidentGNSSJamming {
				checkNoJumps(t, inc.Vehicle, rs)
			}
			checkIncident(t, s, rec, inc, rs)
		})
	}
}

func checkIncident(t *testing.T, s *Sim, rec *recording, inc Incident, rs []telemetry.Record) {
	var in, before, after []telemetry.Record
	for i := range rs {
		switch r := &rs[i]; {
		case between(r, inc.Start, inc.End):
			in = append(in, *r)
		case r.DeviceTime.Before(inc.Start):
			before = append(before, *r)
		default:
			after = append(after, *r)
		}
	}
	if len(in) == 0 {
		t.Fatalf("no records between %s and %s", inc.Start, inc.End)
	}
	alarmSeen := func(k telemetry.AlarmKind) {
		t.Helper()
		for i := range in {
			if hasAlarm(&in[i], k) {
				return
			}
		}
		t.Errorf("no %s alarm during the incident", k)
	}
	switch inc.Kind {
	case IncidentFuelDrain:
		if inc.Litres < 5 {
			t.Fatalf("drained %v l, want a real drain", inc.Litres)
		}
		for _, r := range in {
			if r.Ignition || r.SpeedKmh != 0 {
				t.Fatalf("during the drain: ignition %v speed %v, want parked", r.Ignition, r.SpeedKmh)
			}
		}
		drop := before[len(before)-1].FuelLitres - after[0].FuelLitres
		if drop < 0.8*inc.Litres || drop > 1.2*inc.Litres+3 {
			t.Errorf("fuel dropped %.1f l, ground truth %.1f l", drop, inc.Litres)
		}
	case IncidentTowing:
		alarmSeen(telemetry.AlarmTow)
		moving := 0
		for _, r := range in {
			if r.Ignition {
				t.Fatalf("ignition on while towed at %s", r.DeviceTime)
			}
			if r.SpeedKmh > 5 {
				moving++
			}
		}
		if moving == 0 {
			t.Error("towed vehicle never moved")
		}
	case IncidentNightMovement:
		h := inc.Start.Add(time.Hour).UTC().Hour() // Berlin
		if h < 1 || h > 4 {
			t.Errorf("night movement at %02d local", h)
		}
		for _, r := range before {
			if r.DeviceTime.After(inc.Start.Add(-time.Hour)) && r.SpeedKmh > 0 {
				t.Fatalf("moving at %s, before the scripted night trip", r.DeviceTime)
			}
		}
		moved := false
		for _, r := range in {
			moved = moved || r.SpeedKmh > 10 && r.Ignition
		}
		if !moved {
			t.Error("no driving during the night incident")
		}
	case IncidentLeaveZone:
		out := func(r telemetry.Record) bool {
			return r.FixValid && geo.DistanceM(geo.Point{Lat: r.Lat, Lon: r.Lon}, geo.Point(inc.Zone.Center)) > inc.Zone.RadiusM+50
		}
		for _, r := range before {
			if out(r) {
				t.Fatalf("outside the zone at %s, before the incident", r.DeviceTime)
			}
		}
		n := 0
		for _, r := range in {
			if out(r) {
				n++
			}
		}
		if n == 0 {
			t.Error("never outside the zone during the incident")
		}
	case IncidentGNSSJamming:
		alarmSeen(telemetry.AlarmGNSSJamming)
		var lastGood telemetry.Record
		for _, r := range before {
			if r.FixValid {
				lastGood = r
			}
		}
		lost := 0
		for _, r := range in {
			if r.FixValid {
				lastGood = r
			} else {
				lost++
			}
		}
		if lost == 0 {
			t.Fatal("the fix was never lost")
		}
		for _, r := range after {
			if r.FixValid {
				jump := geo.DistanceM(geo.Point{Lat: lastGood.Lat, Lon: lastGood.Lon}, geo.Point{Lat: r.Lat, Lon: r.Lon})
				if jump < 500 {
					t.Errorf("position jumped %.0f m after the jamming, want a jump", jump)
				}
				break
			}
		}
	case IncidentPowerCut:
		alarmSeen(telemetry.AlarmPowerCut)
		for _, r := range in {
			if r.ExternalVoltage != 0 {
				t.Fatalf("external voltage %v during the power cut", r.ExternalVoltage)
			}
		}
		if after[0].ExternalVoltage < 11 {
			t.Errorf("power not restored: %v V", after[0].ExternalVoltage)
		}
	case IncidentCoverageGap:
		// Records taken during the gap arrive in a packet sent after it.
		for _, p := range rec.raw {
			if p.vehicle != inc.Vehicle {
				continue
			}
			rs, _, _ := wire.DecodeBatch(p.vehicle, p.data, false)
			for i := range rs {
				if between(&rs[i], inc.Start, inc.End) && rs[i].SentTime.Before(inc.End) {
					t.Fatalf("record of %s sent at %s, during the gap", rs[i].DeviceTime, rs[i].SentTime)
				}
			}
		}
		driving := 0
		for _, r := range in {
			if r.SpeedKmh > 5 {
				driving++
			}
		}
		if driving == 0 {
			t.Error("not driving during the coverage gap")
		}
	}
}
