package fuel

import (
	"math"
	"slices"
)

// Sensor lag learned from refuels, for vehicles whose fuel profile gives none.
//
// A damped sensor follows the level with a first-order lag: once the pump stops, the
// reading keeps rising, each interval by the same fraction of the last, exp(-Δt/τ). Two
// consecutive rises d₁ then d₂ over equal intervals Δt give τ = Δt / ln(d₁/d₂). A sensor
// without lag stops rising at once: the rise after the pump's last one is noise, and the
// pair gives a small τ. Only refuels read at 60 s or faster teach anything (over longer
// intervals even a 2-minute lag has died away between two readings), and the lag is the
// median of the first lagLearnRefuels such refuels, so one odd refuel (a pump paused
// half-way) cannot set it.
const (
	lagLearnRefuels = 3
	lagMaxInterval  = 60 // seconds
)

// lagSec is the sensor's lag in seconds: the profile's, or the learned one; 0 when
// neither is known (callers then assume the slowest sensor they must handle).
func (d *Detector) lagSec() float64 {
	if d.prof.LagSec > 0 {
		return d.prof.LagSec
	}
	if len(d.st.LagSamples) >= lagLearnRefuels {
		// At least a second: 0 means unknown to the callers.
		return math.Max(1, median(d.st.LagSamples))
	}
	return 0
}

// learnLag takes one sample from a refuel's readings (raw levels and their times in
// milliseconds, from the stable level before it to the settled level after it).
func (d *Detector) learnLag(raw []float64, ts []int64) {
	st := d.st
	if d.prof.LagSec > 0 || len(st.LagSamples) >= lagLearnRefuels || len(raw) < 4 {
		return
	}
	// The rises between readings, and the largest: the pump at full flow.
	n := len(raw) - 1
	rise := make([]float64, n)
	peak := 0
	for i := range n {
		rise[i] = raw[i+1] - raw[i]
		if rise[i] > rise[peak] {
			peak = i
		}
	}
	floor := d.band() / 4 // what noise and the sensor's steps move a settled reading by
	var taus []float64
	for i := peak; i+1 < n; i++ {
		dt1 := float64(ts[i+1]-ts[i]) / 1000
		dt2 := float64(ts[i+2]-ts[i+1]) / 1000
		if dt1 <= 0 || dt1 > lagMaxInterval || math.Abs(dt2-dt1) > 0.1*dt1 {
			return // irregular or slow reporting: nothing to learn from this refuel
		}
		if rise[i] < 4*floor {
			break // the rest is noise
		}
		d2 := math.Max(rise[i+1], floor)
		if d2 >= rise[i] {
			continue // still pumping at full flow
		}
		taus = append(taus, dt1/math.Log(rise[i]/d2))
	}
	if len(taus) == 0 {
		return
	}
	// The smallest τ of the tail: a pair that straddles the pump's stop mixes flow and
	// decay and reads slower than the sensor is.
	st.LagSamples = append(st.LagSamples, math.Min(slices.Min(taus), MaxLagSec))
}
