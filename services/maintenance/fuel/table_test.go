package fuel

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/services/maintenance/fuel/fuelsim"
)

// The three-set accuracy table: the original generator (sim_test.go, the one this detector
// was first written against), the independent generator's development seeds (the only
// ones looked at while tuning), and its held-out seeds (run once tuning was over).

// scenario is one vehicle's data and truth, whichever generator made it.
type scenario struct {
	capL     float64
	prof     Profile
	readings []Reading
	truth    []patEvent
	stops    []patStop
	drives   [][2]time.Time
}

type patEvent struct {
	kind       Kind
	start, end time.Time
	litres     float64
	patterns   []string
}

type patStop struct {
	start, end time.Time
	patterns   []string
}

func fromOld(tr simTrack) scenario {
	sc := scenario{capL: tr.capL, prof: Profile{CapacityL: tr.capL}, readings: tr.readings, drives: tr.drives}
	for _, t := range tr.truth {
		sc.truth = append(sc.truth, patEvent{kind: t.kind, start: t.start, end: t.end, litres: t.litres})
	}
	return sc
}

// fromNew converts the independent generator's records. withProfile gives the detector
// the vehicle's sensor step and lag, as a fleet manager who filled in the fuel profile
// would; without it the detector learns what it can.
func fromNew(tr fuelsim.Track, withProfile bool) scenario {
	sc := scenario{capL: tr.CapacityL, prof: Profile{CapacityL: tr.CapacityL}, drives: tr.Drives}
	if withProfile {
		sc.prof.StepL = tr.StepL
		sc.prof.LagSec = tr.Lag.Seconds()
	}
	sc.readings = make([]Reading, 0, len(tr.Records))
	for _, r := range tr.Records {
		sc.readings = append(sc.readings, Reading{
			Time: r.Time, Level: r.LevelL, HasLevel: r.HasLevel, SpeedKmh: r.SpeedKmh,
			Ignition: r.Ignition, HasIgnition: true, EngineHours: r.EngineHours, HasHours: r.HasHours,
			OdometerM: r.OdometerM, HasOdometer: true, Lat: r.Lat, Lon: r.Lon, HasPosition: true,
		})
	}
	// The tank type is a pattern too, so the table shows where volumes are lost.
	tank := tankPattern(tr.Type)
	for _, e := range tr.Truth {
		k := KindRefuel
		if e.Kind == fuelsim.Drain {
			k = KindDrain
		}
		sc.truth = append(sc.truth, patEvent{kind: k, start: e.Start, end: e.End, litres: e.Litres, patterns: append(slices.Clip(e.Patterns), tank)})
	}
	for _, s := range tr.Stops {
		sc.stops = append(sc.stops, patStop{start: s.Start, end: s.End, patterns: append(slices.Clip(s.Patterns), tank)})
	}
	return sc
}

// cell is the score of one (detector, set, kind, pattern).
type cell struct {
	truth, detected, tp, volOK int
}

func (c cell) precision() float64 {
	if c.detected == 0 {
		return 1
	}
	return float64(c.tp) / float64(c.detected)
}

func (c cell) recall() float64 {
	if c.truth == 0 {
		return 1
	}
	return float64(c.tp) / float64(c.truth)
}

func (c cell) volume() float64 {
	if c.tp == 0 {
		return 1
	}
	return float64(c.volOK) / float64(c.tp)
}

// board holds cells by kind and pattern ("" is every event of the kind).
type board map[Kind]map[string]*cell

func (b board) at(k Kind, pat string) *cell {
	if b[k] == nil {
		b[k] = map[string]*cell{}
	}
	c := b[k][pat]
	if c == nil {
		c = &cell{}
		b[k][pat] = c
	}
	return c
}

// scoreScenario matches detections to the truth like score (sim_test.go's rule: intervals
// overlapping within ±matchTol, one detection per true event, a second one is a false
// positive). A true event's patterns get its outcome; a false detection is charged to the
// patterns of the stop it lies in, so a pattern's precision says how often the detector
// cried wolf in that situation.
func scoreScenario(sc scenario, det []Event, b board) {
	for _, kind := range []Kind{KindRefuel, KindDrain} {
		used := make([]bool, len(sc.truth))
		for _, t := range sc.truth {
			if t.kind != kind {
				continue
			}
			b.at(kind, "").truth++
			for _, p := range t.patterns {
				b.at(kind, p).truth++
			}
		}
		for _, d := range det {
			if d.Kind != kind || d.Confidence < DefaultMinConfidence && d.Confidence > 0 {
				continue // a suggestion: reported, never alerted
			}
			match := -1
			for i, t := range sc.truth {
				if t.kind == kind && !d.Start.After(t.end.Add(matchTol)) && !d.End.Before(t.start.Add(-matchTol)) {
					match = i
					if !used[i] {
						break
					}
				}
			}
			if match >= 0 && !used[match] {
				used[match] = true
				t := sc.truth[match]
				ok := math.Abs(d.Litres-t.litres) <= math.Max(0.05*t.litres, 2)
				for _, p := range append([]string{""}, t.patterns...) {
					c := b.at(kind, p)
					c.detected++
					c.tp++
					if ok {
						c.volOK++
					}
				}
				continue
			}
			pats := []string{""}
			if match >= 0 {
				pats = append(pats, sc.truth[match].patterns...)
			} else {
				for _, s := range sc.stops {
					if !d.End.Before(s.start) && !d.Start.After(s.end) {
						pats = append(pats, s.patterns...)
						break
					}
				}
			}
			for _, p := range pats {
				b.at(kind, p).detected++
			}
		}
	}
}

// accuracySet is one data set of the table.
type accuracySet struct {
	name      string
	scenarios func(yield func(scenario) bool)
	vehDays   int
}

func oldSet(vehicles, days int) accuracySet {
	return accuracySet{name: "original generator", vehDays: 2 * vehicles * days, scenarios: func(yield func(scenario) bool) {
		for v := range vehicles {
			for _, seed := range []uint64{uint64(1000 + v), uint64(9000 + v)} {
				if !yield(fromOld(simulateVehicle(seed, days))) {
					return
				}
			}
		}
	}}
}

func newSet(name string, seeds []uint64, days int, withProfile bool) accuracySet {
	return accuracySet{name: name, vehDays: len(seeds) * days, scenarios: func(yield func(scenario) bool) {
		for i, seed := range seeds {
			// Half the fleet has a fuel profile with the sensor's step and lag; the other
			// half leaves the detector to learn them.
			if !yield(fromNew(fuelsim.Generate(seed, days), withProfile && i%2 == 0)) {
				return
			}
		}
	}}
}

// detectorRun is one detector of the table.
type detectorRun struct {
	name string
	run  func(sc scenario) []Event
}

var tableDetectors = []detectorRun{
	{"Fleetwire", func(sc scenario) []Event { return runDetectorProfile(DefaultConfig(), sc.prof, sc.readings) }},
	{"Traccar two readings", func(sc scenario) []Event {
		cfg := DefaultConfig()
		return traccarDetect(sc.readings, cfg.MinRefuelL, cfg.MinDrainL)
	}},
}

func runDetectorProfile(cfg Config, prof Profile, rs []Reading) []Event {
	var st State
	d := NewDetector(cfg, prof, &st)
	var out []Event
	for _, r := range rs {
		evs, _ := d.Add(r)
		out = append(out, evs...)
	}
	return append(out, d.FlushAll()...)
}

// envInt reads a size from the environment (for the larger run), or def.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

var tablePatterns = []string{
	"", fuelsim.PatternShortStop, fuelsim.PatternDouble, fuelsim.PatternAfterParking, fuelsim.PatternSlowDrain,
	fuelsim.PatternIdling, fuelsim.PatternCreeping, fuelsim.PatternSlopeLag,
	tankPattern(fuelsim.Car), tankPattern(fuelsim.Van), tankPattern(fuelsim.Truck),
}

// tankPattern names a vehicle type's tank as a table pattern.
func tankPattern(typ string) string {
	switch typ {
	case fuelsim.Car:
		return "car, 50 L tank, 0.25 L steps"
	case fuelsim.Van:
		return "van, 80 L tank, 1 % steps"
	case fuelsim.Truck:
		return "truck, 300 L tank, 0.5 L steps"
	}
	return typ
}

// floors are what TestAccuracyTable demands. Precision and recall must reach the issue's
// 95 % on both new sets (held-out: refuels 98.2 % / 97.2 %, drains 98.7 % / 97.9 %; see
// docs/bench-maintenance.md). Refuel volumes must reach the target, 90 % of found
// events within max(5 %, 2 L) (held-out 92.1 %, development 93.6 %). Drain volumes do
// NOT yet reach it: 83.1 % held-out, 86.5 % development; the misses are mostly 300 L
// trucks (held-out 59.7 % of their drains, against 96.6 % for cars and 91.9 % for
// vans), whose 18-60 L drains must be measured to 2-3 L through slope offsets of up to
// 12 L that settle while a drain that began at parking runs, and road slosh of several
// litres. The drain volume floors are guards a little under what each set reaches, not
// the target: a change that loses accuracy fails.
var floors = map[string]struct {
	rate   float64
	volume map[Kind]float64
}{
	"new generator, development seeds": {0.95, map[Kind]float64{KindRefuel: 0.90, KindDrain: 0.85}},
	"new generator, held-out seeds":    {0.95, map[Kind]float64{KindRefuel: 0.90, KindDrain: 0.82}},
}

// TestAccuracyTable prints (with -v) precision, recall and volume accuracy by kind and
// pattern for Fleetwire's detector and the two-readings baseline on the three data sets,
// and fails when Fleetwire's detector falls below 95 % precision or recall on the
// held-out set, or below the floors above. Events below DefaultMinConfidence are
// suggestions (stored and reported, never alerted) and are not counted as detections.
//
// The default size (60 vehicle-days of the original generator, 240 development and 240
// held-out vehicle-days) runs in seconds; FUEL_ACCURACY_VEHICLES and FUEL_ACCURACY_DAYS
// scale the new sets for a larger run.
func TestAccuracyTable(t *testing.T) {
	vehicles := envInt(t, "FUEL_ACCURACY_VEHICLES", 24)
	days := envInt(t, "FUEL_ACCURACY_DAYS", 10)
	oldVehicles := 3
	if raceEnabled {
		vehicles, days, oldVehicles = 2, 2, 1
	}
	sets := []accuracySet{
		oldSet(oldVehicles, 10),
		newSet("new generator, development seeds", fuelsim.DevSeeds(vehicles), days, true),
	}
	if os.Getenv("FUEL_ACCURACY_DEV_ONLY") == "" {
		sets = append(sets, newSet("new generator, held-out seeds", fuelsim.HeldOutSeeds(vehicles), days, true))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| data set | detector | kind | pattern | true | detected | TP | precision | recall | volume within max(5 %%, 2 L) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, set := range sets {
		boards := make([]board, len(tableDetectors))
		for i := range boards {
			boards[i] = board{}
		}
		readings := 0
		for sc := range set.scenarios {
			readings += len(sc.readings)
			for i, d := range tableDetectors {
				scoreScenario(sc, d.run(sc), boards[i])
			}
		}
		for i, d := range tableDetectors {
			for _, kind := range []Kind{KindRefuel, KindDrain} {
				for _, p := range tablePatterns {
					c, ok := boards[i][kind][p]
					if !ok || c.truth == 0 && c.detected == 0 {
						continue
					}
					if p == "" {
						p = "all"
					} else if i > 0 {
						continue // the baseline's overall figures are enough
					}
					fmt.Fprintf(&sb, "| %s (%d vehicle-days, %d readings) | %s | %s | %s | %d | %d | %d | %.1f %% | %.1f %% | %.1f %% |\n",
						set.name, set.vehDays, readings, d.name, kind, p, c.truth, c.detected, c.tp,
						100*c.precision(), 100*c.recall(), 100*c.volume())
				}
			}
		}
		if set.name == "original generator" || raceEnabled {
			continue
		}
		for _, kind := range []Kind{KindRefuel, KindDrain} {
			c := boards[0].at(kind, "")
			want := floors[set.name]
			if c.truth < 100 {
				t.Errorf("%s, %s: got %d true events, want at least 100 for a meaningful figure", set.name, kind, c.truth)
			}
			if p := c.precision(); p < want.rate {
				t.Errorf("%s, %s precision: got %.3f, want >= %.2f", set.name, kind, p, want.rate)
			}
			if r := c.recall(); r < want.rate {
				t.Errorf("%s, %s recall: got %.3f, want >= %.2f", set.name, kind, r, want.rate)
			}
			if v, w := c.volume(), want.volume[kind]; v < w {
				t.Errorf("%s, %s volume: got %.3f of found events within max(5 %%, 2 L), want >= %.2f", set.name, kind, v, w)
			}
		}
	}
	t.Log(sb.String())
}

// TestGeneratorIsIndependent guards the separation the held-out figure depends on: the
// generator package must not import the detector.
func TestGeneratorIsIndependent(t *testing.T) {
	src, err := os.ReadFile("fuelsim/fuelsim.go")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(src), "services/maintenance/fuel\"") {
		t.Errorf("fuelsim imports the detector package; it must stay independent of it")
	}
}
