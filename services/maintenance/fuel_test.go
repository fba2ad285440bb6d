package maintenance

import (
	"context"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
	"github.com/fleetwire/fleetwire/services/maintenance/fuel/fuelsim"
)

// tank is a non-linear calibration (a tank narrower at the bottom).
var tank = fuel.Profile{CapacityL: 200, Calibration: []fuel.CalPoint{
	{Raw: 0, Litres: 0}, {Raw: 1000, Litres: 40}, {Raw: 2000, Litres: 90}, {Raw: 3000, Litres: 150}, {Raw: 4095, Litres: 200},
}}

// rawFor inverts the calibration, as the sensor would read litres.
func rawFor(l float64) float64 {
	c := tank.Calibration
	for i := 1; i < len(c); i++ {
		if l <= c[i].Litres {
			return c[i-1].Raw + (l-c[i-1].Litres)/(c[i].Litres-c[i-1].Litres)*(c[i].Raw-c[i-1].Raw)
		}
	}
	return c[len(c)-1].Raw
}

// day builds a vehicle-day: parked, a 120 L refuel, a 60 km drive burning 15 L with
// slosh, a long stop with a 40 L drain, another drive.
func fuelDay(vehicle string) []telemetry.Record {
	var out []telemetry.Record
	t := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	level, odoM, hrs := 50.0, 100_000_000.0, 3000.0
	lat := 45.0
	i := 0
	emit := func(spd float64, on bool, slosh float64) {
		i++
		noise := 0.4 * math.Sin(float64(i)*1.7)
		r := rec(vehicle, t, odo(odoM/1000), hours(hrs), ign(on), speed(spd))
		r.Lat = lat
		r.IO = map[string]float64{"fuel_raw": rawFor(level + noise + slosh)}
		out = append(out, r)
	}
	park := func(d time.Duration, during func(k int)) {
		for k := 0; k < int(d/time.Minute); k++ {
			t = t.Add(time.Minute)
			if during != nil {
				during(k)
			}
			emit(0, false, 0)
		}
	}
	drive := func(d time.Duration, kmh, lp100 float64) {
		for k := 0; k < int(d/(30*time.Second)); k++ {
			t = t.Add(30 * time.Second)
			km := kmh / 120
			odoM += km * 1000
			hrs += 30.0 / 3600
			level -= km * lp100 / 100
			lat += km / 111
			emit(kmh, true, 6*math.Sin(float64(k)*2.3))
		}
	}
	park(20*time.Minute, nil)
	park(10*time.Minute, func(int) { level = math.Min(170, level+12) }) // 120 L at 12 L/min
	park(10*time.Minute, nil)
	drive(time.Hour, 60, 25)
	park(80*time.Minute, func(k int) {
		if k >= 20 && k < 30 {
			level -= 4 // 40 L siphoned in 10 minutes
		}
	})
	drive(30*time.Minute, 60, 25)
	return out
}

func TestFuelEventsAndReport(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	if _, err := s.SetFuelProfile(ctx, "V1", tank); err != nil {
		t.Fatal(err)
	}
	recs := fuelDay("V1")
	var evs []Event
	// Batches of 7 records, like a tracker buffering.
	for i := 0; i < len(recs); i += 7 {
		evs = append(evs, feed(t, s, recs[i:min(i+7, len(recs))]...)...)
	}
	var fuelEvs []Event
	for _, e := range evs {
		if e.Kind == EventRefuel || e.Kind == EventFuelDrain {
			fuelEvs = append(fuelEvs, e)
		}
	}
	if len(fuelEvs) != 2 || fuelEvs[0].Kind != EventRefuel || fuelEvs[1].Kind != EventFuelDrain {
		t.Fatalf("fuel events: got %v, want refuel then fuel_drain", kinds(fuelEvs))
	}
	for i, want := range []float64{120, 40} {
		l, err := strconv.ParseFloat(fuelEvs[i].Attrs["litres"], 64)
		if err != nil || math.Abs(l-want) > math.Max(2, 0.05*want) {
			t.Errorf("%s litres: got %q, want %v ± 5 %% or 2 L", fuelEvs[i].Kind, fuelEvs[i].Attrs["litres"], want)
		}
		if !fuelEvs[i].HasPosition {
			t.Errorf("%s: no position", fuelEvs[i].Kind)
		}
	}
	from := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	reports, total, err := s.FuelReports(ctx, "V1", "", from, from.Add(6*time.Hour))
	if err != nil || len(reports) != 1 {
		t.Fatalf("FuelReports: got %d, %v", len(reports), err)
	}
	r := reports[0]
	t.Logf("report: %+v", r)
	near := func(name string, got, want, tol float64) {
		t.Helper()
		if math.Abs(got-want) > tol {
			t.Errorf("%s: got %.1f, want %.1f ± %.1f", name, got, want, tol)
		}
	}
	// 90 minutes at 60 km/h, 25 L/100 km: 22.5 L burnt over 90 km.
	near("start level", r.StartL, 50, 1.5)
	near("refuelled", r.RefuelledL, 120, 3)
	near("drained", r.DrainedL, 40, 2)
	near("distance", r.DistanceKm, 90, 0.5)
	near("end level", r.EndL, 170-22.5-40, 3)
	near("consumed", r.ConsumedL, 22.5, 4)
	near("L/100km", r.Per100Km, 25, 4)
	if len(r.Refuels) != 1 || len(r.Drains) != 1 || !r.Refuels[0].HasPosition {
		t.Fatalf("report lines: got %d refuels, %d drains", len(r.Refuels), len(r.Drains))
	}
	if total.RefuelledL != r.RefuelledL {
		t.Errorf("total of one vehicle: got %v refuelled, want %v", total.RefuelledL, r.RefuelledL)
	}
	// A group report sums its members.
	if err := s.SetGroup(ctx, Group{ID: "G", Vehicles: []string{"V1", "V2"}}); err != nil {
		t.Fatal(err)
	}
	reports, total, err = s.FuelReports(ctx, "", "G", from, from.Add(6*time.Hour))
	if err != nil || len(reports) != 2 || reports[1].HasData || total.DrainedL != r.DrainedL {
		t.Fatalf("group report: got %+v total %+v, %v", reports, total, err)
	}
}

// TestQuietVehicleFuelEvent: a drain detected just before the tracker went to sleep is
// reported by the periodic check, once.
func TestQuietVehicleFuelEvent(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	if _, err := s.SetFuelProfile(ctx, "V1", fuel.Profile{CapacityL: 200}); err != nil {
		t.Fatal(err)
	}
	at := t0
	level := 150.0
	var recs []telemetry.Record
	for i := range 20 { // parked, a record every 5 minutes; 40 L siphoned from the 8th
		if i >= 8 && i < 10 {
			level -= 20
		}
		at = t0.Add(time.Duration(i) * 5 * time.Minute)
		recs = append(recs, rec("V1", at, fuelL(level), ign(false)))
	}
	by := map[string][]input{"V1": nil}
	for _, r := range recs[:15] { // then silence: the new level has too few readings to report
		by["V1"] = append(by["V1"], input{rec: r, part: 2, hasPart: true})
	}
	evs, commit, err := s.apply(ctx, by)
	if err != nil || commit(ctx) != nil || len(evs) != 0 {
		t.Fatalf("before the silence: got %v, %v; want no event yet", kinds(evs), err)
	}
	s.now = func() time.Time { return recs[14].DeviceTime.Add(30 * time.Minute) }
	if evs, _ := s.checkCalendars(ctx, nil); len(evs) != 0 {
		t.Fatalf("check after 30 minutes: got %v, want nothing yet", kinds(evs))
	}
	s.now = func() time.Time { return recs[14].DeviceTime.Add(2 * time.Hour) }
	evs, err = s.checkCalendars(ctx, nil)
	if err != nil || len(evs) != 1 || evs[0].Kind != EventFuelDrain {
		t.Fatalf("check after 2 hours: got %v, %v; want one fuel_drain", kinds(evs), err)
	}
	stored, _ := s.st.ListFuelEvents(ctx, "V1", t0, t0.Add(24*time.Hour))
	if len(stored) != 1 || math.Abs(stored[0].Litres-40) > 2 {
		t.Fatalf("stored fuel events: got %+v, want one of 40 L", stored)
	}
	if evs := feed(t, s, recs[15:]...); len(evs) != 0 {
		t.Fatalf("records after the check: got %v, want no repeat", kinds(evs))
	}
}

// TestFuelReportAgreesWithAlerts: over simulated days with refuels and drains, every
// fuel event on the bus (what dispatch turns into refuel and fuel-theft alerts, one
// alert per event) is in the fuel report with the same id, volume and confidence, and
// the report has no event the bus did not carry.
func TestFuelReportAgreesWithAlerts(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	tr := fuelsim.Generate(fuelsim.DevSeeds(3)[2], 3)
	if _, err := s.SetFuelProfile(ctx, "V1", fuel.Profile{CapacityL: tr.CapacityL}); err != nil {
		t.Fatal(err)
	}
	var recs []telemetry.Record
	for _, r := range tr.Records {
		x := rec("V1", r.Time, odo(r.OdometerM/1000), ign(r.Ignition), speed(r.SpeedKmh))
		x.Lat, x.Lon = r.Lat, r.Lon
		if r.HasLevel {
			fuelL(r.LevelL)(&x)
		}
		recs = append(recs, x)
	}
	bus := map[string]Event{}
	for i := 0; i < len(recs); i += 50 {
		for _, e := range feed(t, s, recs[i:min(i+50, len(recs))]...) {
			if e.Kind == EventRefuel || e.Kind == EventFuelDrain {
				if _, dup := bus[e.ID]; dup {
					t.Errorf("event %s published twice", e.ID)
				}
				bus[e.ID] = e
			}
		}
	}
	from, to := tr.Records[0].Time.Add(-time.Hour), tr.Records[len(tr.Records)-1].Time.Add(time.Hour)
	reports, _, err := s.FuelReports(ctx, "V1", "", from, to)
	if err != nil || len(reports) != 1 {
		t.Fatalf("FuelReports: got %d reports, %v", len(reports), err)
	}
	lines := append(append([]FuelEvent(nil), reports[0].Refuels...), reports[0].Drains...)
	drains := 0
	for _, l := range lines {
		e, ok := bus[l.ID]
		if !ok {
			t.Errorf("report line %s (%s %.1f L): no bus event", l.ID, l.Kind, l.Litres)
			continue
		}
		delete(bus, l.ID)
		if e.Kind != l.Kind.String() || e.Attrs["litres"] != strconv.FormatFloat(l.Litres, 'f', 1, 64) ||
			e.Attrs["confidence"] != strconv.FormatFloat(l.Confidence, 'f', 2, 64) {
			t.Errorf("event %s: bus says %s %s L confidence %s, report says %s %.1f L confidence %.2f",
				l.ID, e.Kind, e.Attrs["litres"], e.Attrs["confidence"], l.Kind, l.Litres, l.Confidence)
		}
		if l.Kind == fuel.KindDrain {
			drains++
		}
	}
	for id, e := range bus {
		t.Errorf("bus event %s (%s %s L): not in the report", id, e.Kind, e.Attrs["litres"])
	}
	if drains == 0 || len(reports[0].Refuels) == 0 {
		t.Errorf("got %d refuels and %d drains, want some of each for the comparison to mean anything", len(reports[0].Refuels), drains)
	}
}
