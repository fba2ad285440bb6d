// Package driving judges driver behaviour from a vehicle's fixes: harsh acceleration,
// harsh braking and harsh cornering, each counted once per episode. It is pure: the
// callers (fleetctl's trips and daily report) feed it the track the tracking API returns.
//
// Fixes carry speed and heading, not accelerometer readings, so the rates are derived from
// consecutive fixes: longitudinal acceleration is the speed change over the time between
// them, lateral acceleration is speed × turn rate. Only fixes close in time are compared
// (MaxGap): over a 30 s reporting interval a hard stop averages out to nothing, so a fleet
// that wants these counts reports every few seconds while moving.
package driving

import (
	"fmt"
	"math"
	"time"
)

// Thresholds decide what is harsh. The defaults are the usual telematics figures:
// ~0.3 g forward, ~0.4 g braking and ~0.4 g sideways.
type Thresholds struct {
	// AccelMps2: a speed gain faster than this (m/s²) is harsh acceleration.
	AccelMps2 float64
	// BrakeMps2: a speed loss faster than this (m/s², positive) is harsh braking.
	BrakeMps2 float64
	// CornerMps2: lateral acceleration (speed × turn rate) above this is harsh cornering.
	CornerMps2 float64
	// CornerMinKmh: below this speed turns are not judged (heading is noise when slow).
	CornerMinKmh float64
	// MaxGap: consecutive fixes further apart than this are not compared.
	MaxGap time.Duration
}

// DefaultThresholds returns the documented defaults.
func DefaultThresholds() Thresholds {
	return Thresholds{AccelMps2: 3.0, BrakeMps2: 4.0, CornerMps2: 4.0, CornerMinKmh: 20, MaxGap: 5 * time.Second}
}

// Validate rejects thresholds that cannot be meant: non-positive rates or gap, a negative
// cornering speed.
func (t Thresholds) Validate() error {
	for _, v := range []float64{t.AccelMps2, t.BrakeMps2, t.CornerMps2} {
		if !(v > 0) || math.IsInf(v, 0) {
			return fmt.Errorf("driving thresholds: rates must be positive and finite, got %+v", t)
		}
	}
	if t.MaxGap <= 0 || !(t.CornerMinKmh >= 0) {
		return fmt.Errorf("driving thresholds: MaxGap must be positive and CornerMinKmh >= 0, got %+v", t)
	}
	return nil
}

// Point is one fix as the judge needs it.
type Point struct {
	Time       time.Time
	SpeedKmh   float64
	HeadingDeg float64
}

// Counts are the harsh episodes found.
type Counts struct {
	HarshAccel, HarshBrake, HarshCorner int
}

// Add sums c and o.
func (c Counts) Add(o Counts) Counts {
	return Counts{c.HarshAccel + o.HarshAccel, c.HarshBrake + o.HarshBrake, c.HarshCorner + o.HarshCorner}
}

// Judge counts harsh episodes over a stream of fixes in time order. An episode is a run
// of consecutive fix pairs over a threshold: it counts once however long it lasts, and a
// pair at or under the threshold ends it. A gap longer than MaxGap ends every episode.
type Judge struct {
	th     Thresholds
	last   Point
	has    bool
	in     [3]bool // accel, brake, corner episodes open
	counts Counts
}

// NewJudge returns a judge with th (which should have passed Validate).
func NewJudge(th Thresholds) *Judge { return &Judge{th: th} }

// Add judges p against the previous fix. Fixes not after the previous one are ignored.
func (j *Judge) Add(p Point) {
	if j.has && !p.Time.After(j.last.Time) {
		return
	}
	prev, had := j.last, j.has
	j.last, j.has = p, true
	if !had {
		return
	}
	dt := p.Time.Sub(prev.Time)
	if dt > j.th.MaxGap {
		j.in = [3]bool{}
		return
	}
	sec := dt.Seconds()
	a := (p.SpeedKmh - prev.SpeedKmh) / 3.6 / sec
	var lat float64
	if v := (p.SpeedKmh + prev.SpeedKmh) / 2; v >= j.th.CornerMinKmh && prev.SpeedKmh >= j.th.CornerMinKmh && p.SpeedKmh >= j.th.CornerMinKmh {
		turn := math.Remainder(p.HeadingDeg-prev.HeadingDeg, 360) * math.Pi / 180
		lat = math.Abs(v / 3.6 * turn / sec)
	}
	j.episode(0, a > j.th.AccelMps2, &j.counts.HarshAccel)
	j.episode(1, -a > j.th.BrakeMps2, &j.counts.HarshBrake)
	j.episode(2, lat > j.th.CornerMps2, &j.counts.HarshCorner)
}

func (j *Judge) episode(i int, over bool, n *int) {
	if over && !j.in[i] {
		*n++
	}
	j.in[i] = over
}

// Counts returns the episodes so far.
func (j *Judge) Counts() Counts { return j.counts }

// Count judges a whole track.
func Count(points []Point, th Thresholds) Counts {
	j := NewJudge(th)
	for _, p := range points {
		j.Add(p)
	}
	return j.Counts()
}
