package tracking

import (
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// This file holds the position rules that decide whether a fix goes into the track and
// the odometer: quality, plausibility against the last accepted fix, the jump-and-return
// spike, the static (parked) hold and parked drift. docs/tracking.md explains each rule.

// maxPending bounds the suspect fixes a state holds back (TeleportConfirm at most).
const maxPending = 8

// quality judges the signal-quality fields a tracker sends with a fix.
func (t *Tracker) quality(r *telemetry.Record) Reason {
	f := &t.f
	// 0 satellites and no HDOP: the tracker does not report them.
	reported := r.Satellites > 0 || r.HDOP > 0
	if reported && f.MinSatellites > 0 && r.Satellites < f.MinSatellites {
		return ReasonLowSatellites
	}
	if f.MaxHDOP > 0 && r.HDOP > f.MaxHDOP {
		return ReasonHighDOP
	}
	if f.MaxPDOP > 0 && r.Has(telemetry.HasPDOP) && r.PDOP > f.MaxPDOP {
		return ReasonHighDOP
	}
	return 0
}

// suspect reports whether the move from a to b (d metres apart, b later) is more than
// the vehicle can have done: faster than MaxSpeedKmh, or, when reported speeds are
// trusted, further than they explain — within SpeedCheckWindow, or at any interval when
// the vehicle reports standing at both ends.
func (t *Tracker) suspect(a, b *Fix, d float64) bool {
	f := &t.f
	dt := max(b.Time.Sub(a.Time).Seconds(), 1)
	if d/dt*3.6 > f.MaxSpeedKmh {
		return true
	}
	if f.SpeedTolerance <= 0 || d <= f.JumpSlackM {
		return false
	}
	v := max(a.SpeedKmh, b.SpeedKmh)
	if v < t.movingKmh {
		return true
	}
	return dt <= f.SpeedCheckWindow.Seconds() && d > v/3.6*dt*f.SpeedTolerance+f.JumpSlackM
}

// tooFast reports whether a to b breaks MaxSpeedKmh alone.
func (t *Tracker) tooFast(a, b *Fix, d float64) bool {
	dt := max(b.Time.Sub(a.Time).Seconds(), 1)
	return d/dt*3.6 > t.f.MaxSpeedKmh
}

func dist(a, b *Fix) float64 { return geo.DistanceM(a.Point(), b.Point()) }

// lastAccepted returns the newest accepted fix before insertion index idx: the live fix,
// or a late fix that arrived after it but was taken later.
func (st *State) lastAccepted(idx int) Fix {
	a := st.Fix
	if prev, _ := st.neighbours(idx); prev != nil && prev.T > a.Time.UnixNano() {
		a = prev.fix()
	}
	return a
}

func (r *recent) fix() Fix {
	return Fix{Time: time.Unix(0, r.T).UTC(), Seq: r.Seq, Lat: r.Lat, Lon: r.Lon, SpeedKmh: float64(r.Speed)}
}

// placeNew decides what becomes of a fix newer than everything applied: accepted as it
// is, accepted at the held or parked coordinates (cur is changed), or held back as
// suspect. It returns whether cur is accepted now and the distance the odometer gains.
func (t *Tracker) placeNew(st *State, res *Result, cur *Fix, idx int, static bool) (bool, float64) {
	if !st.HasFix {
		return true, 0
	}
	f := &t.f
	a := st.lastAccepted(idx)
	if static && st.Parked {
		// Parked: the position is held. Suspect fixes from before cannot be confirmed
		// by a vehicle that stands still.
		if len(st.Pending) > 0 {
			res.Reasons |= ReasonSpike
			st.Pending = st.Pending[:0]
		}
		if f.StaticReleaseM > 0 && dist(&a, cur) > f.StaticReleaseM {
			away := st.Away.fix()
			if st.AwayStreak > 0 && dist(&away, cur) <= f.StaticReleaseM {
				st.AwayStreak++
			} else {
				st.AwayStreak = 1
			}
			st.Away = recent{T: cur.Time.UnixNano(), Seq: cur.Seq, HasPos: true, Lat: cur.Lat, Lon: cur.Lon}
			if int(st.AwayStreak) >= f.TeleportConfirm {
				// Carried elsewhere with the engine off: a new parked position, no distance.
				st.AwayStreak = 0
				cur.SpeedKmh = 0
				return true, 0
			}
		} else {
			st.AwayStreak = 0
		}
		res.Reasons |= ReasonStatic
		cur.Lat, cur.Lon, cur.SpeedKmh = a.Lat, a.Lon, 0
		return true, 0
	}
	st.AwayStreak = 0

	var addM float64
	confirmed := false
	if n := len(st.Pending); n > 0 {
		dA := dist(&a, cur)
		last := &st.Pending[n-1]
		switch {
		case !t.suspect(&a, cur, dA):
			// Back where the last accepted fix says the vehicle is. A detour through the
			// suspect fixes is a jump and return: a spike, whatever the interval.
			path := dist(&a, &st.Pending[0]) + dist(last, cur)
			for i := 1; i < n; i++ {
				path += dist(&st.Pending[i-1], &st.Pending[i])
			}
			if path-dA > f.JumpSlackM {
				res.Reasons |= ReasonSpike
				st.Pending = st.Pending[:0]
			} else {
				addM += t.release(st, res)
				a = st.Fix
			}
		case !t.suspect(last, cur, dist(last, cur)):
			// Agrees with the suspect fixes: enough of them and they are the truth.
			if n+1 >= f.TeleportConfirm {
				addM += t.release(st, res)
				a = st.Fix
				confirmed = true
			} else {
				st.Pending = append(st.Pending, *cur)
				res.Pending = true
				return false, 0
			}
		default:
			// Agrees with nothing: the suspect fixes were wrong; this one is suspect too.
			res.Reasons |= ReasonTeleport
			st.Pending = append(st.Pending[:0], *cur)
			res.Pending = true
			return false, 0
		}
	}
	d := dist(&a, cur)
	if !confirmed && f.TeleportConfirm > 1 && t.suspect(&a, cur, d) {
		if a0, ok := t.retractSpike(st, res, &a, cur, d); ok {
			// The last accepted fix was the spike: this one is judged against the one before.
			addM -= dist(&a0, &a)
			a = a0
			d = dist(&a, cur)
		} else {
			st.Pending = append(st.Pending, *cur)
			res.Pending = true
			return false, addM
		}
	}
	if a.SpeedKmh < t.movingKmh && cur.SpeedKmh < t.movingKmh && d < f.DriftMinDistanceM {
		// Parked drift: keep the coordinates the vehicle stands at.
		res.Reasons |= ReasonParkedDrift
		cur.Lat, cur.Lon, cur.SpeedKmh = a.Lat, a.Lon, 0
		return true, addM
	}
	return true, addM + d
}

// retractSpike checks whether the last accepted fix b, which cur finds implausible, was
// itself a jump and return: cur is plausible from the accepted fix before b, and the
// detour through b is long. Then b leaves the track (res.Retracted) and the fix before it
// is returned.
func (t *Tracker) retractSpike(st *State, res *Result, b, cur *Fix, dBC float64) (Fix, bool) {
	bi, found := st.findRecent(b.Time.UnixNano(), b.Seq)
	if !found || !st.Recent[bi].HasPos || b.Time != st.Fix.Time || b.Seq != st.Fix.Seq {
		return Fix{}, false
	}
	prev, _ := st.neighbours(bi)
	if prev == nil {
		return Fix{}, false
	}
	a0 := prev.fix()
	dAC := dist(&a0, cur)
	if t.suspect(&a0, cur, dAC) || dist(&a0, b)+dBC-dAC <= t.f.JumpSlackM {
		return Fix{}, false
	}
	res.Reasons |= ReasonSpike
	res.Retracted = append(res.Retracted, st.Fix)
	st.Recent[bi].HasPos = false
	// The live fix goes back to the one before, with what the state knows of it.
	st.Fix.Time, st.Fix.Seq, st.Fix.Lat, st.Fix.Lon, st.Fix.SpeedKmh = a0.Time, a0.Seq, a0.Lat, a0.Lon, a0.SpeedKmh
	return a0, true
}

// release accepts the pending fixes: they join the track in order and the odometer gains
// the path through them. It returns that distance.
func (t *Tracker) release(st *State, res *Result) float64 {
	var add float64
	prev := st.lastAccepted(len(st.Recent))
	for _, p := range st.Pending {
		add += dist(&prev, &p)
		if i, found := st.findRecent(p.Time.UnixNano(), p.Seq); found {
			rc := &st.Recent[i]
			rc.HasPos, rc.Lat, rc.Lon, rc.Speed = true, round7(p.Lat), round7(p.Lon), round1(p.SpeedKmh)
		}
		res.Released = append(res.Released, p)
		prev = p
	}
	st.Fix, st.HasFix, st.Parked = prev, true, false
	st.Pending = st.Pending[:0]
	return add
}

// placeLate decides a fix older than the live state: it goes between its neighbours
// unless it is implausible from both (a spike in the backlog). It returns whether it is
// accepted and the odometer's change: the straight line between the neighbours is
// replaced by the detour through it. A backlog longer than the remembered window is
// followed through st.Backlog, so its fixes still count.
func (t *Tracker) placeLate(st *State, res *Result, cur *Fix, idx int, static bool) (bool, float64) {
	prev, next := st.neighbours(idx)
	tns := cur.Time.UnixNano()
	if b := &st.Backlog; b[0].HasPos && b[0].T < tns && b[1].HasPos && b[1].T > tns &&
		(prev == nil || prev.T < b[0].T) {
		// Continuing a backlog that has slid out of the window (or is newer than what the
		// window has before it).
		prev, next = &b[0], &b[1]
	} else if prev == nil && st.Forgot {
		// Older than anything remembered: history only, the odometer cannot place it.
		return true, 0
	}
	ok, add := t.placeBetween(res, cur, prev, next, static)
	if ok && next != nil {
		st.Backlog = [2]recent{{T: tns, Seq: cur.Seq, HasPos: true, Lat: round7(cur.Lat), Lon: round7(cur.Lon), Speed: round1(cur.SpeedKmh)}, *next}
	}
	return ok, add
}

func (t *Tracker) placeBetween(res *Result, cur *Fix, prev, next *recent, static bool) (bool, float64) {
	var nf Fix
	var dNext float64
	if next != nil {
		nf = next.fix()
		dNext = dist(cur, &nf)
	}
	if prev == nil {
		if next == nil {
			return true, 0
		}
		// Older than every fix seen so far: the path now starts here.
		if t.suspect(cur, &nf, dNext) {
			res.Reasons |= ReasonTeleport
			return false, 0
		}
		return true, dNext
	}
	pf := prev.fix()
	d := dist(&pf, cur)
	if static && pf.SpeedKmh < t.movingKmh && d <= max(t.f.StaticReleaseM, t.f.DriftMinDistanceM) {
		// Parked, late: held where the vehicle stood before, like a live parked fix.
		res.Reasons |= ReasonStatic
		cur.Lat, cur.Lon, cur.SpeedKmh = pf.Lat, pf.Lon, 0
		return true, 0
	}
	if t.tooFast(&pf, cur, d) || (t.suspect(&pf, cur, d) && (next == nil || t.suspect(cur, &nf, dNext))) {
		res.Reasons |= ReasonSpike
		return false, 0
	}
	add := d
	if next != nil {
		add += dNext - dist(&pf, &nf)
	}
	return true, add
}
