package tracking

import (
	"math"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

// Trip is a journey between two stops.
type Trip struct {
	Start, End       Fix
	DistanceM        float64
	Duration         time.Duration
	MaxSpeedKmh      float64
	AvgSpeedKmh      float64
	IdleDuration     time.Duration
	startIdx, endIdx int
}

// Stop is a period without a trip: parked, or silent for longer than MaxGap.
type Stop struct {
	Start, End time.Time
	Position   geo.Point
	Duration   time.Duration
	DataGap    bool
}

// span is a stop as an index range into the fixes: [s, e] inclusive.
type span struct {
	s, e int
	gap  bool
}

// Segment splits fixes (ordered by device time) into trips and stops.
//
// Rules (thresholds in TripConfig):
//   - a fix is motion when its speed is at least MovingSpeedKmh;
//   - a run of still fixes lasting at least MinParking is a stop (its duration runs to the
//     first fix that moves again);
//   - two consecutive fixes more than MaxGap apart are a stop too, wherever they are: the
//     tracker fell silent (ignition off, no coverage), and the distance between them is
//     not driven distance of any trip;
//   - between stops lies a trip; one shorter than MinDistanceM or MinDuration, or without
//     a moving fix, is not a trip and the stops around it merge;
//   - a trip's distance is the sum of the distances between its consecutive fixes, its
//     idle time the time spent still with the ignition on.
func Segment(fixes []Fix, cfg TripConfig) ([]Trip, []Stop) {
	n := len(fixes)
	if n == 0 {
		return nil, nil
	}
	moving := func(i int) bool { return fixes[i].SpeedKmh >= cfg.MovingSpeedKmh }
	var stops []span
	add := func(sp span) {
		if k := len(stops); k > 0 && sp.s <= stops[k-1].e {
			if sp.e > stops[k-1].e {
				stops[k-1].e = sp.e
			}
			stops[k-1].gap = stops[k-1].gap || sp.gap
			return
		}
		stops = append(stops, sp)
	}
	for i := 0; i < n; {
		if moving(i) {
			if i+1 < n && fixes[i+1].Time.Sub(fixes[i].Time) > cfg.MaxGap {
				add(span{s: i, e: i + 1, gap: true})
			}
			i++
			continue
		}
		j := i
		for j+1 < n && !moving(j+1) && fixes[j+1].Time.Sub(fixes[j].Time) <= cfg.MaxGap {
			j++
		}
		if fixes[j].Time.Sub(fixes[i].Time) >= cfg.MinParking {
			add(span{s: i, e: j})
		}
		if j+1 < n && fixes[j+1].Time.Sub(fixes[j].Time) > cfg.MaxGap {
			add(span{s: j, e: j + 1, gap: true})
		}
		i = j + 1
	}

	// Trips lie between stops (and the range edges); drop the ones too small to count and
	// merge the stops around them.
	var trips []Trip
	var kept []span
	tryTrip := func(a, b int) bool {
		if b <= a {
			return false
		}
		t := buildTrip(fixes, a, b, cfg)
		if t.MaxSpeedKmh < cfg.MovingSpeedKmh || t.DistanceM < cfg.MinDistanceM || t.Duration < cfg.MinDuration {
			return false
		}
		trips = append(trips, t)
		return true
	}
	prevEnd := 0
	for _, sp := range stops {
		ok := tryTrip(prevEnd, sp.s)
		if !ok && len(kept) > 0 {
			// Not a real trip: the vehicle stayed stopped.
			last := &kept[len(kept)-1]
			last.e = sp.e
			last.gap = last.gap || sp.gap
		} else {
			kept = append(kept, sp)
		}
		prevEnd = sp.e
	}
	tryTrip(prevEnd, n-1)

	out := make([]Stop, 0, len(kept))
	for _, sp := range kept {
		out = append(out, Stop{
			Start:    fixes[sp.s].Time,
			End:      fixes[sp.e].Time,
			Position: fixes[sp.s].Point(),
			Duration: fixes[sp.e].Time.Sub(fixes[sp.s].Time),
			DataGap:  sp.gap,
		})
	}
	return trips, out
}

func buildTrip(fixes []Fix, a, b int, cfg TripConfig) Trip {
	t := Trip{Start: fixes[a], End: fixes[b], startIdx: a, endIdx: b}
	for i := a; i <= b; i++ {
		t.MaxSpeedKmh = math.Max(t.MaxSpeedKmh, fixes[i].SpeedKmh)
		if i == b {
			break
		}
		t.DistanceM += geo.DistanceM(fixes[i].Point(), fixes[i+1].Point())
		if fixes[i].SpeedKmh < cfg.MovingSpeedKmh && fixes[i].Ignition > 0 {
			t.IdleDuration += fixes[i+1].Time.Sub(fixes[i].Time)
		}
	}
	t.Duration = t.End.Time.Sub(t.Start.Time)
	if t.Duration > 0 {
		t.AvgSpeedKmh = t.DistanceM / t.Duration.Seconds() * 3.6
	}
	return t
}

// Simplify returns fixes reduced with the Douglas-Peucker algorithm: every dropped fix
// lies within tolM metres (great-circle cross-track distance) of the simplified line.
// The first and last fixes are always kept.
func Simplify(fixes []Fix, tolM float64) []Fix {
	if tolM <= 0 || len(fixes) < 3 {
		return fixes
	}
	keep := make([]bool, len(fixes))
	keep[0], keep[len(fixes)-1] = true, true
	type seg struct{ a, b int }
	stack := []seg{{0, len(fixes) - 1}}
	for len(stack) > 0 {
		s := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if s.b-s.a < 2 {
			continue
		}
		worst, at := -1.0, -1
		a, b := fixes[s.a].Point(), fixes[s.b].Point()
		for i := s.a + 1; i < s.b; i++ {
			if d := segmentDistanceM(fixes[i].Point(), a, b); d > worst {
				worst, at = d, i
			}
		}
		if worst > tolM {
			keep[at] = true
			stack = append(stack, seg{s.a, at}, seg{at, s.b})
		}
	}
	out := make([]Fix, 0, len(fixes)/4+2)
	for i, k := range keep {
		if k {
			out = append(out, fixes[i])
		}
	}
	return out
}

// segmentDistanceM is the great-circle distance from p to the arc a–b: the cross-track
// distance when p projects inside the arc, else the distance to the nearer end.
func segmentDistanceM(p, a, b geo.Point) float64 {
	dAB := geo.DistanceM(a, b)
	dAP := geo.DistanceM(a, p)
	if dAB < 1e-6 {
		return dAP
	}
	δ13 := dAP / geo.EarthRadiusM
	θ13 := geo.BearingDeg(a, p) * math.Pi / 180
	θ12 := geo.BearingDeg(a, b) * math.Pi / 180
	xt := math.Asin(math.Sin(δ13) * math.Sin(θ13-θ12))
	at := math.Acos(math.Max(-1, math.Min(1, math.Cos(δ13)/math.Cos(xt)))) * geo.EarthRadiusM
	if math.Cos(θ13-θ12) < 0 || at < 0 {
		return dAP
	}
	if at > dAB {
		return geo.DistanceM(b, p)
	}
	return math.Abs(xt) * geo.EarthRadiusM
}
