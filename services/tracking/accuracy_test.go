package tracking

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/simulators/trackgen"
)

// The accuracy test measures the filters, the odometer and trip segmentation against the
// ground truth of simulators/trackgen, an independent track generator with labelled GPS
// noise. The development seeds were used while tuning; the held-out seeds were run once
// the tuning was done. docs/bench-tracking.md holds the table and the command.

// accuracyTargets are issue #19's targets.
var accuracyTargets = struct {
	fleetOdoPct, vehicleOdoP95Pct, tripP95Pct, driftMPerHour, goodDroppedPct float64
	teleportsAdmitted                                                        int
}{1, 3, 2, 5, 0.1, 0}

// accuracyVehicles is the fleet size per seed (one day each); under the race detector,
// which slows the generator about twentyfold, a smaller fleet keeps CI time reasonable.
var accuracyVehicles = 50

func init() {
	if raceEnabled {
		accuracyVehicles = 8
	}
}

// evalTrack is what a method made of one vehicle's day.
type evalTrack struct {
	points   []labelledFix // accepted fixes, by device time
	odoM     float64       // odometer growth over the day (the source the API shows)
	gpsOdoM  float64       // odometer growth from fixes alone
	accepted map[fixKey]bool
}

type fixKey struct {
	t   int64
	seq uint64
}

type labelledFix struct {
	Fix
	label trackgen.Label
	own   bool // at the record's own coordinates (not held at a parked position)
}

// accuracyRow is one line of the table.
type accuracyRow struct {
	name                         string
	trueTrips, trips, matched    int
	tripP50, tripP95             float64 // % error of matched trips
	odoP50, odoP95, fleetPct     float64 // % error per vehicle, fleet total signed %
	gpsOdoP95, gpsFleetPct       float64
	trueKm, odoKm                float64
	driftPerHour                 float64
	spikesAdmitted               int
	spikeKm                      float64
	goodDropped, goodFixes       int
	goodDroppedPct               float64
	parkedSpikes, drivingSpikes  int
	lowQuality, lowQualityPassed int
	parkedPassed, drivingPassed  int
}

// runFilters applies one vehicle's records in delivery order through the tracker, as the
// bus edge does, and collects what it accepted.
func runFilters(cfg Config, v trackgen.Vehicle) evalTrack {
	tr := NewTracker(cfg)
	st := NewState(v.ID)
	labels := make(map[fixKey]*trackgen.Item, len(v.Items))
	for i := range v.Items {
		it := &v.Items[i]
		if it.Label != trackgen.Duplicate {
			labels[fixKey{it.Record.DeviceTime.UnixNano(), it.Record.Sequence}] = it
		}
	}
	et := evalTrack{accepted: make(map[fixKey]bool, len(v.Items))}
	add := func(f Fix) {
		k := fixKey{f.Time.UnixNano(), f.Seq}
		if et.accepted[k] {
			return
		}
		et.accepted[k] = true
		it := labels[k]
		own := geo.DistanceM(f.Point(), geo.Point{Lat: it.Record.Lat, Lon: it.Record.Lon}) < 1
		et.points = append(et.points, labelledFix{Fix: f, label: it.Label, own: own})
	}
	var odo0, gps0 float64
	for i, it := range v.Items {
		r := it.Record
		r.ReceivedTime = it.Deliver
		r.StreamSeq = uint64(i + 1)
		res := tr.Apply(st, &r, it.Deliver)
		if i == 0 {
			odo0, gps0 = st.OdometerM, st.GPSOdometerM
		}
		for _, f := range res.Released {
			add(f)
		}
		for _, f := range res.Retracted {
			k := fixKey{f.Time.UnixNano(), f.Seq}
			if et.accepted[k] {
				delete(et.accepted, k)
				et.points = slices.DeleteFunc(et.points, func(p labelledFix) bool { return p.Time.Equal(f.Time) && p.Seq == f.Seq })
			}
		}
		if res.HasPoint {
			add(res.Point)
		}
	}
	et.odoM = st.OdometerM - odo0
	et.gpsOdoM = st.GPSOdometerM - gps0
	slices.SortFunc(et.points, func(a, b labelledFix) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Seq, b.Seq))
	})
	return et
}

// runRawSum is the naive method: every fix the device flags valid, by device time, the
// odometer the sum of the distances between them.
func runRawSum(v trackgen.Vehicle) evalTrack {
	et := evalTrack{accepted: make(map[fixKey]bool)}
	for _, it := range v.Items {
		r := it.Record
		if !r.FixValid || (r.Lat == 0 && r.Lon == 0) {
			continue
		}
		k := fixKey{r.DeviceTime.UnixNano(), r.Sequence}
		if et.accepted[k] {
			continue
		}
		et.accepted[k] = true
		et.points = append(et.points, labelledFix{Fix: Fix{Time: r.DeviceTime, Seq: r.Sequence, Lat: r.Lat, Lon: r.Lon,
			SpeedKmh: r.SpeedKmh}, label: it.Label, own: true})
	}
	slices.SortFunc(et.points, func(a, b labelledFix) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Seq, b.Seq))
	})
	for i := 1; i < len(et.points); i++ {
		et.odoM += geo.DistanceM(et.points[i-1].Point(), et.points[i].Point())
	}
	et.gpsOdoM = et.odoM
	return et
}

// evaluate scores a method on a fleet.
func evaluate(name string, fleets [][]trackgen.Vehicle, trips TripConfig, method func(trackgen.Vehicle) evalTrack) accuracyRow {
	row := accuracyRow{name: name}
	var tripErr, odoErr, gpsErr []float64
	var trueM, odoM, gpsM, driftM, parkedH float64
	for _, fleet := range fleets {
		for _, v := range fleet {
			et := method(v)
			trueM += v.DistanceM
			odoM += et.odoM
			gpsM += et.gpsOdoM
			odoErr = append(odoErr, math.Abs(et.odoM-v.DistanceM)/v.DistanceM*100)
			gpsErr = append(gpsErr, math.Abs(et.gpsOdoM-v.DistanceM)/v.DistanceM*100)

			for _, it := range v.Items {
				k := fixKey{it.Record.DeviceTime.UnixNano(), it.Record.Sequence}
				switch it.Label {
				case trackgen.Good, trackgen.ParkedDrift:
					row.goodFixes++
					if !et.accepted[k] {
						row.goodDropped++
					}
				case trackgen.ParkedSpike:
					row.parkedSpikes++
				case trackgen.DrivingSpike:
					row.drivingSpikes++
				case trackgen.LowQuality:
					row.lowQuality++
				}
			}
			pts := et.points
			for i := range pts {
				bad := pts[i].label.Spike() && pts[i].own
				if bad {
					row.spikesAdmitted++
					switch pts[i].label {
					case trackgen.LowQuality:
						row.lowQualityPassed++
					case trackgen.ParkedSpike:
						row.parkedPassed++
					case trackgen.DrivingSpike:
						row.drivingPassed++
					}
				}
				if i > 0 && (bad || (pts[i-1].label.Spike() && pts[i-1].own)) {
					row.spikeKm += geo.DistanceM(pts[i-1].Point(), pts[i].Point()) / 1000
				}
			}
			// Parked drift: distance between consecutive accepted fixes inside a true park.
			j := 0
			for _, p := range v.Parks {
				parkedH += p.End.Sub(p.Start).Hours()
				for j < len(pts) && pts[j].Time.Before(p.Start) {
					j++
				}
				for k := j + 1; k < len(pts) && pts[k].Time.Before(p.End); k++ {
					driftM += geo.DistanceM(pts[k-1].Point(), pts[k].Point())
				}
			}

			fixes := make([]Fix, len(pts))
			for i := range pts {
				fixes[i] = pts[i].Fix
			}
			got, _ := Segment(fixes, trips)
			row.trips += len(got)
			used := make([]bool, len(got))
			for _, tt := range trueTrips(v.Trips, trips) {
				if tt.End.Sub(tt.Start) < trips.MinDuration || tt.DistanceM < trips.MinDistanceM {
					continue
				}
				row.trueTrips++
				best, bestOv := -1, time.Duration(0)
				for gi, g := range got {
					if used[gi] {
						continue
					}
					end, start := g.End.Time, g.Start.Time
					if tt.End.Before(end) {
						end = tt.End
					}
					if tt.Start.After(start) {
						start = tt.Start
					}
					ov := end.Sub(start)
					if ov > bestOv {
						best, bestOv = gi, ov
					}
				}
				if best < 0 || bestOv < tt.End.Sub(tt.Start)/2 {
					continue
				}
				used[best] = true
				row.matched++
				tripErr = append(tripErr, math.Abs(got[best].DistanceM-tt.DistanceM)/tt.DistanceM*100)
			}
		}
	}
	row.trueKm, row.odoKm = trueM/1000, odoM/1000
	row.fleetPct = (odoM - trueM) / trueM * 100
	row.gpsFleetPct = (gpsM - trueM) / trueM * 100
	row.tripP50, row.tripP95 = percentile(tripErr, 50), percentile(tripErr, 95)
	row.odoP50, row.odoP95 = percentile(odoErr, 50), percentile(odoErr, 95)
	row.gpsOdoP95 = percentile(gpsErr, 95)
	if parkedH > 0 {
		row.driftPerHour = driftM / parkedH
	}
	if row.goodFixes > 0 {
		row.goodDroppedPct = float64(row.goodDropped) / float64(row.goodFixes) * 100
	}
	return row
}

// trueTrips joins true journeys separated by less than MinParking: by the documented
// rules, standing that briefly does not end a trip.
func trueTrips(in []trackgen.Trip, cfg TripConfig) []trackgen.Trip {
	var out []trackgen.Trip
	for _, tt := range in {
		if n := len(out); n > 0 && tt.Start.Sub(out[n-1].End) < cfg.MinParking {
			out[n-1].End = tt.End
			out[n-1].DistanceM += tt.DistanceM
			continue
		}
		out = append(out, tt)
	}
	return out
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func (r accuracyRow) String() string {
	return fmt.Sprintf("| %s | %d / %d (%d matched) | %.2f / %.2f | %.2f / %.2f | %.0f of %.0f (%+.2f %%) | %.2f / %+.2f %% | %.1f | %d of %d / %d of %d | %d of %d | %.1f | %d of %d (%.3f %%) |",
		r.name, r.trips, r.trueTrips, r.matched, r.tripP50, r.tripP95, r.odoP50, r.odoP95, r.odoKm, r.trueKm, r.fleetPct,
		r.gpsOdoP95, r.gpsFleetPct, r.driftPerHour, r.parkedPassed, r.parkedSpikes, r.lowQualityPassed, r.lowQuality,
		r.drivingPassed, r.drivingSpikes, r.spikeKm, r.goodDropped, r.goodFixes, r.goodDroppedPct)
}

const accuracyHeader = "| set | trips found / true (matched) | trip error p50 / p95 % | odometer error p50 / p95 % | fleet km (error) | GPS odometer p95 % / fleet | parked drift m/h | teleports admitted: parked / low-quality | driving spikes admitted | spike km admitted | good fixes dropped |\n|---|---|---|---|---|---|---|---|---|---|---|"

func generateSet(seeds []uint64) [][]trackgen.Vehicle {
	out := make([][]trackgen.Vehicle, len(seeds))
	for i, s := range seeds {
		out[i] = trackgen.Generate(trackgen.Config{Seed: s, Vehicles: accuracyVehicles})
	}
	return out
}

// TestOdometerAccuracy runs the development and held-out fleets through the filters and
// the naive raw sum, prints the table (-v) and fails when the held-out fleet misses a
// target.
func TestOdometerAccuracy(t *testing.T) {
	cfg := DefaultConfig()
	sets := []struct {
		name  string
		seeds []uint64
		check bool
	}{
		{"development", trackgen.DevSeeds, true},
		{"held-out", trackgen.HeldOutSeeds, true},
	}
	var lines []string
	for _, set := range sets {
		t.Run(set.name, func(t *testing.T) {
			fleets := generateSet(set.seeds)
			row := evaluate(set.name+" (filters)", fleets, cfg.Trips, func(v trackgen.Vehicle) evalTrack { return runFilters(cfg, v) })
			raw := evaluate(set.name+" (raw sum)", fleets, cfg.Trips, runRawSum)
			lines = append(lines, row.String(), raw.String())
			for _, x := range []accuracyRow{row, raw} {
				t.Logf("%s: admitted low-quality %d of %d, parked spikes %d of %d, driving spikes %d of %d", x.name,
					x.lowQualityPassed, x.lowQuality, x.parkedPassed, x.parkedSpikes, x.drivingPassed, x.drivingSpikes)
			}
			if !set.check {
				return
			}
			tg := accuracyTargets
			checks := []struct {
				what      string
				got, want float64
			}{
				{"fleet odometer error %", math.Abs(row.fleetPct), tg.fleetOdoPct},
				{"per-vehicle odometer error p95 %", row.odoP95, tg.vehicleOdoP95Pct},
				{"trip distance error p95 %", row.tripP95, tg.tripP95Pct},
				{"parked drift m per parked hour", row.driftPerHour, tg.driftMPerHour},
				// Teleports: parked spikes and low-quality fixes. Driving jump-and-return
				// spikes are reported in the table; the few that land where the vehicle could
				// have been are not told from good fixes (docs/bench-tracking.md).
				{"teleports admitted", float64(row.parkedPassed + row.lowQualityPassed), float64(tg.teleportsAdmitted)},
				{"good fixes dropped %", row.goodDroppedPct, tg.goodDroppedPct},
			}
			for _, c := range checks {
				if !(c.got <= c.want) {
					t.Errorf("got %s %.3f, want at most %.3f", c.what, c.got, c.want)
				}
			}
		})
	}
	t.Logf("%d vehicles × %d seeds per set, one day each\n%s\n%s", accuracyVehicles, len(trackgen.DevSeeds), accuracyHeader, strings.Join(lines, "\n"))
}

// BenchmarkApplyNoisy measures the filters on trackgen's noisy day (spikes, drift, late
// batches, duplicates) rather than on a clean straight line: one record per op.
func BenchmarkApplyNoisy(b *testing.B) {
	fleet := trackgen.Generate(trackgen.Config{Seed: trackgen.DevSeeds[0], Vehicles: 5})
	var items []trackgen.Item
	for _, v := range fleet {
		items = append(items, v.Items...)
	}
	tr := NewTracker(DefaultConfig())
	states := map[string]*State{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(items)
		if k == 0 {
			clear(states)
		}
		it := &items[k]
		st := states[it.Record.VehicleID]
		if st == nil {
			st = NewState(it.Record.VehicleID)
			states[it.Record.VehicleID] = st
		}
		r := it.Record
		tr.Apply(st, &r, it.Deliver)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
