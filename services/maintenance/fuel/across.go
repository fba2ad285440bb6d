package fuel

import (
	"math"
	"time"
)

// The across-stop judgement compares the level the vehicle arrived with and the level it
// left with, both read while driving. It needs no stable level during the stop, so it
// sees what the in-stop judgement cannot: refuels during stops of one to three readings,
// drains that begin as the vehicle parks (before any reference exists), slow drains that
// never look like a step, siphoning while idling or creeping at walking pace, and levels
// seen through a damped sensor. A slope offset or a damped sensor's lag cancels out:
// both references are read on the road, long enough after the stop for the sensor to
// have followed. It answers only once the vehicle has driven on, so it complements the
// in-stop judgement (which raises an overnight theft during the night) and never
// repeats an event of the same kind the in-stop judgement reported for the stop.

// RefReading is one driving reading kept for a reference level.
type RefReading struct {
	T     int64   `json:"t"`
	L     float64 `json:"l"`
	DistM float64 `json:"d"`
}

// Across is a stop (or a run of stops joined by drives too short for a reference) whose
// arrival level is known and whose departure level is awaited.
type Across struct {
	ArrL    float64   `json:"arr_l"`
	ArrSE   float64   `json:"arr_se"`   // standard error of ArrL
	ArrT    time.Time `json:"arr_t"`    // median time of the arrival readings
	ArrDist float64   `json:"arr_dist"` // distance counter there
	ArrIdle float64   `json:"arr_idle"` // IdleSec at the stop's start
	StopAt  time.Time `json:"stop_at"`  // first standing reading
	LeftAt  time.Time `json:"left_at"`  // last standing reading
	Lat     float64   `json:"lat"`
	Lon     float64   `json:"lon"`
	HasPos  bool      `json:"has_pos"`
	// What the in-stop judgement reported meanwhile.
	Refuels int `json:"refuels,omitempty"`
	Drains  int `json:"drains,omitempty"`
	// InStopL: the in-stop events' volumes, refuels positive and drains negative (the
	// held one excepted); the change between the references includes them.
	InStopL float64 `json:"in_stop_l,omitempty"`
	// Held is an in-stop event whose new level the stop ended too soon to measure; it is
	// reported with the departure reference's measure (see judgeAcross).
	Held *Event `json:"held,omitempty"`
	// HeldBlend: Held was measured in the stop, but from a level read before the vehicle
	// settled on its slope; its volume is blended with the road levels' measure.
	HeldBlend bool `json:"held_blend,omitempty"`
}

// Reference sizes.
const (
	// refReadings: driving readings per reference (20 min at the usual 30 s). Slosh on
	// the road moves a truck's level by several litres from one reading to the next, and
	// neighbouring readings move together (for about a minute): a reference needs many
	// minutes of them. On the development fleet 40 readings measured drains better than
	// 20 or 30 (trucks' slosh averages out further) and as well as 60, whose longer
	// windows carry more of the consumption estimate's error.
	refReadings    = 40
	refMinReadings = 4 // fewest readings that still make a reference
	// defaultLagSec is the sensor lag assumed when the profile gives none: the slowest
	// damped sensor the detector must handle, so an unknown sensor is never trusted
	// before it has followed the change.
	defaultLagSec = 120
	// maxJoinM: stops joined by a drive shorter than this are one period.
	maxJoinM = 10000
	// blendK: the uncertainty of a drain measured in the stop from a level read before
	// the vehicle settled on its slope, as a fraction of the tank (1 %: the offset, up
	// to ±4 %, has mostly appeared by the first stable reading). Its volume is blended
	// with the road levels' measure by inverse variance. The road's own uncertainty is
	// its references' standard errors plus a quarter of the consumption estimate, a few
	// litres on a truck; so the in-stop measure keeps most of the weight, and the road
	// corrects it where the two disagree by much (development drains +1 %; trusting the
	// road more, 2 % or 4 %, measured worse).
	blendK = 0.01
	// minStop: a standstill with the engine running shorter than this is traffic, not a
	// stop, and does not interrupt the drive's reference.
	minStop = 2 * time.Minute
)

// refSkip is how long after driving off readings are too early for a reference: the
// fuel still sloshes from pulling away, and a damped sensor still follows the stop's
// changes (three time constants bring it within 5 %).
func (d *Detector) refSkip() time.Duration {
	lag := d.lagSec()
	if lag <= 0 {
		lag = defaultLagSec
	}
	return max(d.cfg.SloshIgnore, time.Duration(3*lag*float64(time.Second)))
}

// refLevel returns a reference's level, its time and distance, and the standard error
// of the level. Each reading is first carried to the reference's median distance with
// the consumption per km, so a long window on the road does not smear the level; the
// level is then a trimmed mean, which rejects spikes like a median but uses the
// independent part of every reading (slosh is the noise that matters, and it averages
// out only over many readings). The standard error is the readings' robust spread
// (1.4826 × the median absolute deviation) over the square root of half their number,
// because slosh makes neighbouring readings move together.
func (d *Detector) refLevel(buf []RefReading) (l float64, t time.Time, dist, se float64) {
	ls := make([]float64, len(buf))
	ts := make([]float64, len(buf))
	ds := make([]float64, len(buf))
	for i, b := range buf {
		ts[i], ds[i] = float64(b.T), b.DistM
	}
	dist = median(ds)
	lkm := d.lkm()
	for i, b := range buf {
		ls[i] = b.L - lkm*(dist-b.DistM)/1000
	}
	l = levelEstimate(ls)
	mid := median(ls)
	dev := make([]float64, len(ls))
	for i, x := range ls {
		dev[i] = math.Abs(x - mid)
	}
	se = 1.4826 * median(dev) / math.Sqrt(math.Max(1, float64(len(ls))/2))
	return l, time.UnixMilli(int64(median(ts))).UTC(), dist, se
}

// across runs for every reading after the in-stop judgement; evs are the events the
// in-stop judgement just reported.
func (d *Detector) across(r Reading, evs []Event) []Event {
	st := d.st
	out := evs[:0:0]
	for _, e := range evs {
		a := st.Across
		if a == nil {
			out = append(out, e)
			continue
		}
		switch e.Kind {
		case KindRefuel:
			a.Refuels++
		case KindDrain:
			a.Drains++
		}
		if e.unsettled && a.Held == nil {
			a.HeldBlend = e.parked
			e.unsettled, e.parked = false, false
			a.Held = &e
			continue
		}
		a.InStopL += float64(kindDirection(e.Kind)) * e.Litres
		out = append(out, e)
	}
	driving := r.SpeedKmh >= d.cfg.DriveKmh
	if driving && st.Driving && !st.LastTime.IsZero() && r.Time.Sub(st.LastTime) > d.cfg.MaxGap {
		// A silence of the tracker while driving may hide a whole stop (a refuel between
		// two records on the road): it is judged as one, from the last record before the
		// silence to the first after it, so the references on either side never mix.
		st.StopSeen, st.StopFrom, st.StopIdle = st.LastTime, st.LastTime, st.IdleSec
		st.StopLat, st.StopLon, st.StopPos = r.Lat, r.Lon, r.HasPosition
		out = d.openStop(out)
		st.StopCommitted = false
		st.DriveSince, st.DriveFromDist = r.Time, st.DistanceM
		st.DriveBuf = st.DriveBuf[:0]
		if a := st.Across; a != nil {
			a.LeftAt = r.Time
		}
	}
	switch {
	case driving && !st.Driving:
		st.Driving = true
		if !st.StopCommitted {
			// A standstill in traffic: the drive goes on, references and all.
			break
		}
		st.StopCommitted = false
		st.DriveSince, st.DriveFromDist = r.Time, st.DistanceM
		st.DriveBuf = st.DriveBuf[:0]
		if a := st.Across; a != nil && !st.LastTime.IsZero() {
			a.LeftAt = st.LastTime
		}
	case !driving && st.Driving:
		st.Driving = false
		st.StopSeen, st.StopIdle = r.Time, st.IdleSec
		// After a silence longer than MaxGap the stop may have begun at any time since
		// the last record (and a stop at a pump may lie inside it): its period, and any
		// event judged across it, start there.
		st.StopFrom = r.Time
		if !st.LastTime.IsZero() && r.Time.Sub(st.LastTime) > d.cfg.MaxGap {
			st.StopFrom = st.LastTime
		}
		st.StopLat, st.StopLon, st.StopPos = r.Lat, r.Lon, r.HasPosition
	}
	if !driving && !st.StopCommitted && (r.HasIgnition && !r.Ignition || r.Time.Sub(st.StopSeen) >= minStop) {
		// A stop: the engine is off, or the vehicle stood longer than traffic holds it.
		st.StopCommitted = true
		out = d.openStop(out)
	}
	if driving && r.HasLevel && r.Time.Sub(st.DriveSince) >= d.refSkip() {
		st.DriveBuf = append(st.DriveBuf, RefReading{T: r.Time.UnixMilli(), L: r.Level, DistM: st.DistanceM})
		if len(st.DriveBuf) > refReadings {
			st.DriveBuf = st.DriveBuf[len(st.DriveBuf)-refReadings:]
		}
		if st.Across != nil && len(st.DriveBuf) >= refReadings {
			out = d.judgeAcross(out)
		}
	}
	return out
}

// openStop starts a stop's period, judging the previous one if the drive since gave it
// a departure reference.
func (d *Detector) openStop(out []Event) []Event {
	st := d.st
	if len(st.DriveBuf) < refMinReadings {
		// Too short a drive for a reference. A move of a few hundred metres (across a
		// yard, from the pump to the kiosk) joins the two stops into one period; over a
		// longer one the consumption estimate would swamp the comparison, so the period
		// is given up (an event it held is reported as measured in the stop).
		if a := st.Across; a != nil && st.DistanceM-st.DriveFromDist > maxJoinM {
			st.Across = nil
			if a.Held != nil {
				out = append(out, *a.Held)
			}
		}
		return out
	}
	if st.Across != nil {
		out = d.judgeAcross(out)
	}
	l, t, dist, se := d.refLevel(st.DriveBuf)
	d.learnConsumption(l, dist)
	st.Across = &Across{ArrL: l, ArrSE: se, ArrT: t, ArrDist: dist, ArrIdle: st.StopIdle, StopAt: st.StopFrom, Lat: st.StopLat, Lon: st.StopLon, HasPos: st.StopPos}
	return out
}

// learnConsumption updates the litres-per-km estimate from the drive between the last
// departure reference and this arrival reference (no stop in between judged a change).
func (d *Detector) learnConsumption(l, dist float64) {
	st := d.st
	if !st.HasDep {
		return
	}
	st.HasDep = false
	km := (dist - st.DepDist) / 1000
	if km < 5 {
		return
	}
	lkm := (st.DepL - l) / km
	capL := math.Max(d.prof.CapacityL, 50)
	if lkm < 0 || lkm > capL/200 {
		return // a refuel or drain on the way, or noise: not a consumption figure
	}
	if st.Lkm == 0 {
		st.Lkm = lkm
		return
	}
	st.Lkm = 0.8*st.Lkm + 0.2*lkm
}

// consumption is what the engine burnt from the arrival to the departure reference:
// idle burn for the standing running time, the learned litres per km for the distance.
func (d *Detector) consumption(a *Across, depDist float64) float64 {
	return d.cfg.IdleBurnLph*(d.st.IdleSec-a.ArrIdle)/3600 + d.lkm()*math.Max(0, depDist-a.ArrDist)/1000
}

// lkm is the consumption per km: learned, or a tenth of a percent of the tank per km
// (a 50 L car 0.05 L/km, a 300 L truck 0.3 L/km), the right order for road vehicles.
func (d *Detector) lkm() float64 {
	if d.st.Lkm > 0 {
		return d.st.Lkm
	}
	return math.Max(d.prof.CapacityL, 50) / 1000
}

func (d *Detector) judgeAcross(out []Event) []Event {
	st := d.st
	a := st.Across
	st.Across = nil
	dep, _, depDist, depSE := d.refLevel(st.DriveBuf)
	st.DepL, st.DepDist, st.HasDep = dep, depDist, true
	exp := d.consumption(a, depDist)
	// The change the in-stop judgement already reported is not this one's: a refuel
	// after a drain in the same period is measured without the drain.
	net := dep - a.ArrL + exp - a.InStopL
	if h := a.Held; h != nil {
		// The in-stop judgement saw the event but not its end: the road levels measure it,
		// when they agree on its direction and clear their noise.
		noise := math.Hypot(a.ArrSE, depSE) + 0.25*exp
		if dir := kindDirection(h.Kind); a.HeldBlend {
			v := float64(dir) * net
			if v > 0 && v >= 0.5*h.Litres {
				sIn := blendK * math.Max(d.prof.CapacityL, 50)
				nAc := math.Max(noise, 0.1)
				wIn, wAc := 1/(sIn*sIn), 1/(nAc*nAc)
				h.Litres = (wIn*h.Litres + wAc*v) / (wIn + wAc)
			}
			return append(out, *h)
		}
		if dir := kindDirection(h.Kind); float64(dir)*net > 3*noise && float64(dir)*net >= 0.5*h.Litres {
			h.Before, h.After, h.ExpectedL, h.Litres = a.ArrL+a.InStopL, dep, exp, float64(dir)*net
			h.Across = true
		}
		return append(out, *h)
	}
	ev := Event{
		Start: a.StopAt, End: a.LeftAt, Before: a.ArrL, After: dep, ExpectedL: exp,
		Lat: a.Lat, Lon: a.Lon, HasPosition: a.HasPos, Across: true,
	}
	// The smallest change the comparison can resolve: slosh on the road moves a few
	// percent of the tank, so never less than AcrossMinPct of it; and it must stand
	// clear of the references' noise and a quarter of the consumption estimate.
	noise := math.Hypot(a.ArrSE, depSE) + 0.25*exp
	floor := d.cfg.AcrossMinPct / 100 * d.prof.CapacityL
	switch {
	case net > 0 && a.Refuels == 0:
		ev.Kind, ev.Litres = KindRefuel, net
		floor = math.Max(floor, d.cfg.MinRefuelL)
	case net < 0 && a.Drains == 0:
		ev.Kind, ev.Litres = KindDrain, -net
		floor = math.Max(floor, d.minDrain())
	default:
		return out
	}
	if ev.Litres < floor {
		return out
	}
	z := (ev.Litres) / math.Max(noise, 0.1)
	ev.Confidence = acrossConfidence(z)
	if ev.Confidence == 0 {
		return out
	}
	st.HasDep = false // the next drive's consumption would include this change
	return append(out, ev)
}

func (d *Detector) minDrain() float64 {
	return math.Max(d.cfg.MinDrainL, d.cfg.MinDrainPct/100*d.prof.CapacityL)
}

// acrossConfidence maps how many standard errors the change stands clear of the noise
// to a confidence: below 3 nothing, 3..5 a suggestion (0.3..0.5), 5 and more confirmed
// by the two references (up to 0.8; an in-stop judgement of stable levels is firmer).
func acrossConfidence(z float64) float64 {
	var c float64
	switch {
	case z < 3:
		return 0
	case z < 5:
		c = 0.3 + 0.1*(z-3)
	default:
		c = math.Min(0.8, 0.5+0.05*(z-5))
	}
	return math.Round(c*100) / 100
}
